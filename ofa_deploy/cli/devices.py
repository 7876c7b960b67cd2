"""``ofa-deploy devices``: device profiles and which backends can run here."""

from __future__ import annotations

import argparse

from ofa_deploy.backend.interface import backend_class, backend_registry
from ofa_deploy.backend.profiles import builtin_profile_names, load_profile
from ofa_deploy.cli.output import format_table, print_json
from ofa_deploy.errors import OFADeployError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("devices", help="list device profiles and the backends available here")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def backend_status() -> dict[str, dict]:
    status = {}
    for name in sorted(backend_registry()):
        try:
            cls = backend_class(name)
            info = cls().runtime_info()
            status[name] = {"available": True, **info, "target": cls.description, "extra": cls.extra}
        except OFADeployError as exc:
            status[name] = {"available": False, "reason": str(exc)}
    return status


def adb_devices() -> list[dict[str, str]]:
    """Phones the local adb server sees (empty when none is running)."""
    from ofa_deploy.backends.adb import list_adb_devices

    return list_adb_devices()


def run(args: argparse.Namespace) -> int:
    backends = backend_status()
    phones = adb_devices()
    profiles = []
    for name in builtin_profile_names():
        profile = load_profile(name)
        profiles.append({**profile.to_dict(), "available": backends.get(profile.backend, {}).get("available", False)})
    if args.json:
        print_json({"profiles": profiles, "backends": backends, "adb_devices": phones})
        return 0
    print("Device profiles (use with --device NAME):")
    rows = [(p["name"], p["backend"], "yes" if p["available"] else "no", p["description"]) for p in profiles]
    print(format_table(["profile", "backend", "ready", "description"], rows))
    print("\nBackends:")
    rows = [
        (
            name,
            "yes" if s["available"] else "no",
            f"{s['runtime']} {s['runtime_version']}" if s["available"] else s["reason"],
        )
        for name, s in backends.items()
    ]
    print(format_table(["backend", "ready", "runtime"], rows))
    print("\nADB devices (use with settings.serial, backend adb):")
    if phones:
        print(format_table(["serial", "state"], [(p["serial"], p["state"]) for p in phones]))
    else:
        print("  none (no adb server running, or no phone connected)")
    return 0
