"""``profile`` over several devices: shards measured in parallel, merged into one table.

Locally each device gets a thread (the devices do the timing; this machine only drives them);
with ``--cluster`` each shard is a Ray job on the host the device is attached to
(:mod:`ofa_deploy.fleet.cluster`). Either way a shard is the ordinary resumable profile of its
keys into its own file, so ``--resume`` continues every device where it stopped, and the merged
table is written only once every shard is complete. Splitting and merging: :mod:`.sharding`.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ofa_deploy.errors import BadInputError, OFADeployError, TargetUnavailableError
from ofa_deploy.fleet.sharding import Shard, merge_shards, split_plan
from ofa_deploy.fleet.targets import BackendSpec
from ofa_deploy.latency.profiling import ProfilePlan, profile, profile_metadata
from ofa_deploy.latency.table import LatencyTable

# Runs one shard to completion and returns its table (on this machine, or as a cluster job).
ShardJob = Callable[[Shard, BackendSpec, str, bool, Callable[[int], None]], LatencyTable]


def profile_shard(
    shard: Shard, spec: BackendSpec, device_profile: str, resume: bool, on_batch: Callable[[int], None] | None = None
) -> LatencyTable:
    """Measure one shard on its device into ``shard.path`` (resumable)."""
    with spec.create() as backend:
        metadata = profile_metadata(backend, device_profile)
        return profile(backend, shard.plan, shard.path, metadata, resume=resume, progress=False, on_batch=on_batch)


def profile_over_devices(
    plan: ProfilePlan,
    specs: dict[str, BackendSpec],
    out: Path,
    device_profile: str,
    resume: bool = False,
    progress: bool = True,
    job: ShardJob = profile_shard,
) -> tuple[LatencyTable, dict[str, float]]:
    """Profile ``plan`` sharded over the devices of ``specs``; write and return the merged table,
    and each device's seconds. A failed device fails the run only after the others finished
    (their shards are complete on disk, and ``--resume`` redoes only what is missing)."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not resume:
        raise BadInputError(f"{out} already exists; pass --resume to continue it, or choose another --out")
    shards = split_plan(plan, list(specs), out)
    total = sum(len(s.plan.ops) for s in shards)
    bar = tqdm(total=total, desc="profiling", unit="key", disable=not progress or None, file=sys.stderr)
    lock = threading.Lock()

    def advance(n: int) -> None:
        with lock:
            bar.update(n)

    seconds: dict[str, float] = {}
    tables: dict[str, LatencyTable] = {}
    failures: dict[str, OFADeployError] = {}

    def run(shard: Shard) -> LatencyTable:
        started = time.monotonic()
        try:
            return job(shard, specs[shard.device], device_profile, resume, advance)
        finally:
            seconds[shard.device] = round(time.monotonic() - started, 2)

    try:
        with ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="profile-shard") as pool:
            futures = {pool.submit(run, shard): shard for shard in shards}
            for future in as_completed(futures):
                device = futures[future].device
                try:
                    tables[device] = future.result()
                except OFADeployError as exc:
                    failures[device] = exc
    finally:
        bar.close()
    if failures:
        unreachable = [d for d, e in failures.items() if isinstance(e, TargetUnavailableError)]
        device = next(d for d in specs if d in failures)  # the first named, whichever failed first
        exc = failures[device]
        kind = TargetUnavailableError if unreachable else type(exc)
        done = ", ".join(d for d in specs if d in tables) or "none"
        hint = "" if "--resume" in str(exc) else "; rerun with --resume to measure only what is missing"
        raise kind(
            f"{len(failures)} of {len(specs)} device(s) failed: {device}: {exc} (complete shards: {done}{hint})"
        ) from None
    merged = merge_shards(plan, {s.device: tables[s.device] for s in shards}, out)
    merged.save(out)
    return merged, seconds


def fleet_requested(args: argparse.Namespace) -> bool:
    """Several devices (a repeated device flag) or a cluster: the sharded path."""
    from ofa_deploy.backend.registry import backend_class
    from ofa_deploy.cli.common import repeated_flag

    if getattr(args, "cluster", None):
        return True
    name = args.backend
    if name is None and args.device:
        from ofa_deploy.backend.profiles import load_profile

        name = load_profile(args.device).backend
    if name is None:
        return False
    option = next((o for o in backend_class(name).cli_options if o.repeatable), None)
    return option is not None and len(repeated_flag(args, option.flag)) > 1


def run_profile(args: argparse.Namespace, device, plan: ProfilePlan) -> int:
    """The ``profile`` verb over several devices (called by ofa_deploy.cli.profile)."""
    from ofa_deploy.cli.output import info, print_json
    from ofa_deploy.fleet.targets import specs_from_args

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
