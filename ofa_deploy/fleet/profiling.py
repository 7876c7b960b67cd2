"""``profile`` over several devices: shards measured in parallel, merged into one table.

Locally each device gets a thread (the devices do the timing; this machine only drives them);
with ``--cluster`` each shard is a Ray job on the host the device is attached to
(:mod:`ofa_deploy.fleet.cluster`). Either way a shard is the ordinary resumable profile of its
keys into its own file, so ``--resume`` continues every device where it stopped, and the merged
table is written only once every shard is complete. Splitting and merging: :mod:`.sharding`.
"""

from __future__ import annotations

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
