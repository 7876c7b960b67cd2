"""``ofa-deploy profile``: measure a latency lookup table on a target."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ofa_deploy.cli.common import (
    WIDTH_MULT,
    add_bounded,
    add_cluster_flag,
    add_target_args,
    checked,
    make_backend,
    parse_resolutions,
    resolve_profile,
    warn_if_busy,
)
from ofa_deploy.cli.output import info, print_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy profile`` and its flags."""
    p = subparsers.add_parser("profile", help="measure a latency lookup table (LUT) on a target")
    add_target_args(p)
    p.add_argument("--resolutions", help="comma-separated resolutions or 'all' (default: the profile's)")
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default: the profile's)")
    p.add_argument("--out", required=True, help="LUT file to write (JSON)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_cluster_flag(p, "profile in shards")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Measure a LUT into ``--out`` on one target or sharded over several, holding the lock every LUT writer takes."""
    from ofa_deploy.files import ensure_parent, output_lock

    ensure_parent(Path(args.out))  # an unusable --out fails before any measuring
    with output_lock(Path(args.out)):  # the lock every LUT writer takes (one device or a fleet)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    device = resolve_profile(args)
    from ofa_deploy.cli.fleet_args import fleet_requested

    if fleet_requested(args):  # several devices (--serial S1 --serial S2) or --cluster: sharded (docs/fleet.md)
        return _profile_fleet(args, device, _plan(args, device))
    with make_backend(args, device) as backend:
        return _profile(args, device, backend)


def _plan(args: argparse.Namespace, device):
    from ofa_deploy.latency.profiling import ProfilePlan
    from ofa_deploy.space.arch import check_width_mult

    resolutions = (
        parse_resolutions(args.resolutions)
        if args.resolutions
        else (device.resolutions if device else parse_resolutions("160,176,192,208,224"))
    )
    width_mult = check_width_mult(
        args.width_mult if args.width_mult is not None else (device.width_mult if device else 1.0)
    )
    return ProfilePlan.for_space(width_mult, resolutions)


def _profile(args: argparse.Namespace, device, backend) -> int:
    from ofa_deploy.latency.profiling import (
        BASELINE_WARNING,
        DRIFT_WARNING,
        baseline_offset,
        drift_ratio,
        profile,
        profile_metadata,
    )

    plan = _plan(args, device)
    resolutions, width_mult = plan.resolutions, plan.width_mult
    metadata = profile_metadata(backend, device.name if device else backend.name)
    warn_if_busy(backend)
    out = Path(args.out)
    info(
        f"profiling {len(plan.ops)} distinct operators ({len(resolutions)} resolution(s), w{width_mult}) "
        f"on {backend.name} [{metadata.runtime} {metadata.runtime_version}, {backend.timing.threads} thread(s)]"
        + (" (estimates from an analytical model)" if metadata.estimated else "")
    )
    started = time.time()
    try:
        table = profile(backend, plan, out, metadata, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        info(f"interrupted: measured keys are saved in {out}; rerun with --resume to continue")
        return 130
    elapsed = time.time() - started
    ratio = drift_ratio(table)
    summary = {
        "out": str(out),
        "keys": len(plan.ops),
        "resolutions": list(resolutions),
        "width_mult": width_mult,
        "backend": backend.name,
        "seconds": round(elapsed, 2),
        "call_overhead_ms": table.call_overhead_ms,
        "drift_ratio": round(ratio, 4),
        "baseline_offset": round(baseline_offset(table), 4),
    }
    if ratio > 1 + DRIFT_WARNING:
        info(
            f"warning: the reference operator's latency drifted by {100 * (ratio - 1):.0f}% during profiling "
            "(machine load or thermal throttling); consider re-profiling when the target is idle"
        )
    if abs(summary["baseline_offset"] - 1) > BASELINE_WARNING:
        reference = table.metadata.reference
        info(
            f"warning: the reference operator ran at {summary['baseline_offset'] * reference.baseline_ms:.3f} ms "
            f"while profiling but its baseline, timed alone first, is {reference.baseline_ms:.3f} ms: this table's "
            f"milliseconds are {1 / summary['baseline_offset']:.2f}x this machine's wall-clock ones (consistent "
            "among themselves and with validate; check a pick's wall-clock time with `ofa-deploy benchmark`)"
        )
    if args.json:
        print_json(summary)
    else:
        print(
            f"wrote {out}: {len(plan.ops)} keys in {elapsed:.1f} s "
            f"(overhead per call {table.call_overhead_ms * 1000:.1f} us, drift {100 * (ratio - 1):.1f}%)"
        )
    return 0


def _profile_fleet(args: argparse.Namespace, device, plan) -> int:
    """The verb over several devices: shards measured in parallel, merged (:mod:`ofa_deploy.fleet.profiling`)."""
    from ofa_deploy.cli.fleet_args import specs_from_args
    from ofa_deploy.fleet.profiling import ShardJob, profile_over_devices, profile_shard

    specs = specs_from_args(args, device)
    out = Path(args.out)
    job: ShardJob = profile_shard
    if args.cluster:
        from ofa_deploy.fleet.cluster import Cluster

        job = Cluster.connect(args.cluster).shard_job()
    info(f"profiling {len(plan.ops)} distinct operators sharded over {len(specs)} device(s): {', '.join(specs)}")
    started = time.time()
    table, seconds = profile_over_devices(
        plan, specs, out, device.name if device else args.backend, args.resume, not args.no_progress, job
    )
    fleet = table.metadata.fleet or {}
    for name, found in fleet.get("disagreeing", {}).items():
        info(
            f"warning: device {name} disagrees with the others: its anchor operators are {found['ratio']:.2f}x "
            f"theirs (noise allows {100 * found['noise']:.0f}%); left out of the shared entries, its own entries "
            "are marked with it: check that device (throttling, another model) and re-profile its keys"
        )
    summary = {
        "out": str(out),
        "keys": len(plan.ops),
        "devices": list(specs),
        "seconds": round(time.time() - started, 2),
        "seconds_per_device": seconds,
        "anchors": fleet.get("anchors", []),
        "max_device_spread": fleet.get("max_device_spread"),
        "disagreeing": fleet.get("disagreeing", {}),
    }
    if args.json:
        print_json(summary)
    else:
        spread = summary["max_device_spread"]
        print(
            f"wrote {out}: {len(plan.ops)} keys from {len(specs)} devices in {summary['seconds']:.1f} s"
            + (f" (largest device spread on shared keys {spread:.2f}x)" if spread else "")
        )
    return 0
