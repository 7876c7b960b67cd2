"""``ofa-deploy doctor``: everything a first run on a target needs, checked, with the fix for each failure."""

from __future__ import annotations

import argparse

DEMO_DEVICE = "host-cpu"  # what `ofa-deploy demo` runs on: what a bare `doctor` must find ready
MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "info": "info"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy doctor``."""
    from ofa_deploy.cli.common import add_target_args

    p = subparsers.add_parser(
        "doctor",
        help="check what a first run on a target needs, with the fix for each failure",
        description="Check a target (--backend/--device and its flags, e.g. --serial), or every backend with its "
        "default profile. For a phone: benchmark_model, the adb server, authorization, ABI, governor, a trial run; "
        "for a board: linker, tracker, a session; for a GPU: driver, engines, clocks. Exit 0 when the target "
        f"checked (without one: the host CPU that `demo` uses, profile {DEMO_DEVICE}) is ready, else 3.",
    )
    add_target_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def _checked(args: argparse.Namespace) -> list[tuple[str, str | None, argparse.Namespace]]:
    """(backend, device profile, the arguments that make it) for every target to check."""
    from ofa_deploy.backend.profiles import default_profile_for
    from ofa_deploy.backend.registry import loadable_backends
    from ofa_deploy.cli.common import resolve_profile

    if args.backend or args.device:
        profile = resolve_profile(args)
        return [(profile.backend if profile else args.backend, profile.name if profile else None, args)]
    targets = []
    for name in loadable_backends():
        profile = default_profile_for(name)
        one = argparse.Namespace(**{**vars(args), "backend": name, "device": profile.name if profile else None})
        targets.append((name, one.device, one))
    return targets


def _diagnosis(name: str, args: argparse.Namespace) -> list:
    from ofa_deploy.backend.diagnosis import Finding, Verdict
    from ofa_deploy.cli.common import make_backend, resolve_profile
    from ofa_deploy.errors import BadInputError, OFADeployError

    try:
        backend = make_backend(args, resolve_profile(args))
    except BadInputError:
        raise  # a wrong flag or setting is the user's input: exit 2, as on every verb
    except OFADeployError as exc:
        return [Finding("configuration", Verdict.FAIL, str(exc), exc.fix)]
    with backend:
        return backend.diagnose()


def run(args: argparse.Namespace) -> int:
    """Diagnose each target; print the findings grouped by target, or one JSON document."""
    from ofa_deploy.backend.diagnosis import failed
    from ofa_deploy.cli.output import print_json

    selected = bool(args.backend or args.device)
    reports = []
    for name, device, target_args in _checked(args):
        findings = _diagnosis(name, target_args)
        needed = selected or device == DEMO_DEVICE
        reports.append({"backend": name, "device": device, "needed": needed, "findings": findings})
    ready = not any(r["needed"] and failed(r["findings"]) for r in reports)
    if args.json:
        print_json(
            {
                "ready": ready,
                "targets": [
                    {**r, "ready": not failed(r["findings"]), "findings": [f.to_dict() for f in r["findings"]]}
                    for r in reports
                ],
            }
        )
        return 0 if ready else 3
    width = max((len(f.check) for r in reports for f in r["findings"]), default=10)
    for report in reports:
        state = "not ready" if failed(report["findings"]) else "ready"
        device = f" (device profile {report['device']})" if report["device"] else ""
        print(f"{report['backend']}{device}: {state}")
        for finding in report["findings"]:
            print(f"  {MARKS[finding.verdict.value]:<4}  {finding.check:<{width}}  {finding.detail}")
            if finding.fix and finding.verdict.value in ("fail", "warn"):
                print(f"  {'':<4}  {'':<{width}}  fix: {finding.fix}")
        print()
    if ready:
        print("ready" if selected else f"ready to run `ofa-deploy demo` ({DEMO_DEVICE}); other targets as listed")
    else:
        print("not ready: fix the FAIL lines above (exit 3)")
    return 0 if ready else 3
