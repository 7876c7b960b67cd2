"""``ofa-deploy deploy``: put a bundle on one or many devices, verify it there, benchmark it, record it."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath

from ofa_deploy.cli.common import (
    Bound,
    add_allow_target_mismatch,
    add_bounded,
    add_cluster_flag,
    add_target_args,
    add_verify_key_flag,
    checked,
)
from ofa_deploy.errors import BadInputError

TOLERANCE = Bound(float, 0.0, low_open=True)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy deploy`` and its flags."""
    p = subparsers.add_parser(
        "deploy",
        help="push a bundle to devices (in parallel), check its sha256 on each, benchmark it there, record it",
    )
    p.add_argument("bundle", help="bundle directory written by `ofa-deploy compile`")
    add_target_args(p)
    p.add_argument("--all-devices", action="store_true", help="every device the backend sees attached right now")
    p.add_argument("--remote-dir", metavar="D", help="install directory on the devices (default: the backend's)")
    add_bounded(
        p,
        "--tolerance",
        TOLERANCE,
        "largest |measured - predicted| / predicted that passes (default 0.25)",
        default=0.25,
    )
    p.add_argument("--force", action="store_true", help="redo devices that already hold this bundle")
    p.add_argument("--dry-run", action="store_true", help="say what would be done on each device; change nothing")
    add_allow_target_mismatch(p, "a bundle whose prediction was")
    add_verify_key_flag(p)
    add_cluster_flag(p, "run each device's job")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Deploy a verified bundle to every device named, locally or on ``--cluster``; exit code from the outcomes."""
    from ofa_deploy.backend.timing import TimingOptions
    from ofa_deploy.cli.common import run_bundle_precision, target_for_record
    from ofa_deploy.cli.fleet_args import specs_from_args
    from ofa_deploy.deploy.bundle import open_bundle
    from ofa_deploy.fleet.deploy import (
        BundleFiles,
        DeployOptions,
        deploy_fleet,
        exit_code,
        local_job,
        require_deployable,
    )

    if args.remote_dir is not None and not PurePosixPath(args.remote_dir).is_absolute():
        raise BadInputError(f"--remote-dir {args.remote_dir!r}: must be an absolute path on the device")
    directory = Path(args.bundle)
    key = Path(args.verify_key) if args.verify_key else None
    manifest = open_bundle(directory, key)  # a bundle that fails verification stops here (exit 2)
    settings = manifest.document["backend"].get("settings")
    run_bundle_precision(args, settings, str(directory))
    profile, recorded = target_for_record(args, manifest.backend_name, settings, str(directory))
    timing = manifest.timing
    base = TimingOptions(**{**timing.to_dict(), "instances": 1}) if timing else None
    specs = specs_from_args(args, profile, base, recorded, check=require_deployable)
    bundle = BundleFiles.of(directory, manifest)
    # the devices' profile: the one --device names, else the one the bundle was compiled for
    named = profile.name if profile is not None and args.device else manifest.document["backend"].get("device_profile")
    options = DeployOptions(
        args.remote_dir, args.tolerance, args.force, args.dry_run, named, args.allow_target_mismatch
    )
    if args.cluster:
        from ofa_deploy.fleet.cluster import Cluster

        cluster = Cluster.connect(args.cluster)
        job, cancel = cluster.deploy_job(specs, directory, bundle, options), cluster.cancel
    else:
        job = local_job(specs, directory, bundle, options)
        cancel = job.cancel  # Ctrl-C: stop the jobs still running
    records = deploy_fleet(directory, list(specs), job, options, progress=not args.no_progress, cancel=cancel)
    _report(args, directory, records)
    return exit_code(records)


def _report(args: argparse.Namespace, directory: Path, records) -> None:
    from ofa_deploy.cli.output import format_table, info, print_json
    from ofa_deploy.fleet.deploy import exit_code
    from ofa_deploy.fleet.records import RECORDS_DIR, UNREACHABLE

    if args.json:
        print_json(
            {
                "bundle": str(directory),
                "dry_run": args.dry_run,
                "exit_code": exit_code(records),
                "devices": [r.to_dict() for r in records],
            }
        )
    else:
        rows = []
        for r in records:
            measured = "" if r.measured_ms is None else f"{r.measured_ms:.3f}"
            predicted = "" if r.predicted_ms is None else f"{r.predicted_ms:.3f}"
            error = "" if r.error_percent is None else f"{r.error_percent:+.1f}%"
            verified = "yes" if r.verified_on_device else "no"
            rows.append([r.device, r.status, verified, measured, predicted, error, f"{r.seconds:.1f}"])
        headers = ["device", "status", "sha256 on device", "measured ms", "predicted ms", "error", "s"]
        print(format_table(headers, rows))
        if not args.dry_run:
            print(f"records: {directory / RECORDS_DIR}/")
    for r in records:
        if r.reason and r.status not in ("deployed", "skipped", "would-install", "would-skip"):
            kind = "unreachable" if r.status == UNREACHABLE else r.status
            info(f"warning: {r.device}: {kind}: {r.reason}")
