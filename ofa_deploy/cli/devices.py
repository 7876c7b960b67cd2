"""``ofa-deploy devices``: device profiles, and what every discovered backend can reach here."""

from __future__ import annotations

import argparse
from dataclasses import asdict


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy devices``."""
    p = subparsers.add_parser("devices", help="list device profiles, backends and attached targets")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """List the device profiles (built-in and plugins'), every loadable backend and the targets each sees."""
    from ofa_deploy.backend.profiles import load_profile, named_profiles
    from ofa_deploy.backend.registry import discover, loadable_backends
    from ofa_deploy.cli.output import format_table, print_json

    entries = discover()
    classes = loadable_backends()
    statuses = {}
    for name, cls in classes.items():
        status = cls.status()
        if not entries[name].builtin:
            status.plugin = entries[name].distribution
        statuses[name] = status
    profiles = []
    for name, named in named_profiles().items():
        profile = load_profile(name)
        status = statuses.get(profile.backend)
        provider = None if named.builtin else named.provider  # a plugin's profile says whose it is
        # ready: configured and reachable now (the backend says why not); available: its runtime imports
        reason = classes[profile.backend].readiness(profile.settings, status) if status else "backend not loadable"
        profiles.append(
            {
                **profile.to_dict(),
                "available": bool(status and status.available),
                "ready": not reason,
                "reason": reason,
                "plugin": provider,
            }
        )
    if args.json:
        print_json({"profiles": profiles, "backends": {name: asdict(s) for name, s in statuses.items()}})
        return 0
    print("Device profiles (use with --device NAME; ready: configured and reachable now, else (n) says why):")
    reasons: list[str] = []  # each distinct reason once, under the table

    def ready(profile: dict) -> str:
        if profile["ready"]:
            return "yes"
        if profile["reason"] not in reasons:
            reasons.append(profile["reason"])
        return f"no ({reasons.index(profile['reason']) + 1})"

    rows = [(p["name"], p["backend"], ready(p), _described(p)) for p in profiles]
    print(format_table(["profile", "backend", "ready", "description"], rows))
    for number, reason in enumerate(reasons, 1):
        print(f"  ({number}) {reason}")
    print("\nBackends:")
    rows = [
        (
            name,
            s.kind,
            "yes" if s.available else "no",
            f"{s.runtime} {s.runtime_version}" if s.available else s.reason,
        )
        for name, s in statuses.items()
    ]
    print(format_table(["backend", "kind", "ready", "runtime"], rows))
    for name, s in statuses.items():
        if not (s.targets or (s.kind == "remote device" and s.available)):
            continue
        flags = f" (use with {', '.join(s.flags)})" if s.flags else ""
        print(f"\nTargets of '{name}'{flags}:")
        if s.targets:
            first = ("id", "state", "ready")
            columns = [*first, *sorted({k for t in s.targets for k in t} - set(first))]
            print(format_table(columns, [[t.get(c, "") for c in columns] for t in s.targets]))
        else:
            print(f"  none attached{': ' + s.reason if s.reason else ''}")
    return 0


def _described(profile: dict) -> str:
    return profile["description"] + (f" (from {profile['plugin']})" if profile["plugin"] else "")
