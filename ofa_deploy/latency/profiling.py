"""Build a latency lookup table by measuring every distinct operator on a backend.

The table file is rewritten atomically after each measured key (after each batch, for backends
that measure many models per round trip, such as a phone), so an interrupted run (Ctrl-C,
kill -9, a device that vanished) loses at most the key (batch) in flight and ``--resume``
continues from the file. Each key is measured once even when several resolutions contain it.

Per-call overhead: every per-operator model pays the runtime's fixed cost of one inference call,
a whole network pays it once. It is measured first, subtracted from every entry and added back
once per prediction (``metadata.call_overhead_ms``).

Drift: every measurement also times a fixed reference operator (see :mod:`ofa_deploy.backend.timing`);
entries are normalised by it, its baseline is stored in ``metadata.reference``, and its raw
latency every ``drift_every`` keys is kept in ``metadata.drift``. A change of more than 15% during
profiling is reported rather than folded silently into the table.

Analytical backends (cost models) go through the same loop: their values are estimates
(``metadata.measurement == "estimated"``), with no reference operator and no drift record.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa_deploy.backend.interface import Backend, TargetKind
from ofa_deploy.backend.progress import measuring
from ofa_deploy.backend.timing import Reference
from ofa_deploy.errors import BadInputError, OFADeployError
from ofa_deploy.files import output_lock
from ofa_deploy.latency.metadata import ESTIMATED, TIMED, DriftPoint, ReferenceInfo, TableMetadata
from ofa_deploy.latency.table import LatencyTable
from ofa_deploy.space.arch import check_resolutions
from ofa_deploy.space.ops import OpSpec, resolution_ops

DRIFT_WARNING = 0.15
BASELINE_WARNING = 0.10  # |in-run reference / baseline - 1| above this: the table's ms are not wall-clock ms
log = logging.getLogger(__name__)
VALUE_FIELD = "estimate"


@dataclass
class ProfilePlan:
    """What to measure: every operator of the space at these resolutions, by key."""

    width_mult: float
    resolutions: tuple[int, ...]
    ops: dict[str, OpSpec]  # distinct keys, in measuring order
    keys_by_resolution: dict[int, set[str]]

    @classmethod
    def for_space(cls, width_mult: float, resolutions: Sequence[int]) -> ProfilePlan:
        res = check_resolutions(resolutions)
        ops: dict[str, OpSpec] = {}
        by_res: dict[int, set[str]] = {}
        for r in res:
            for op in resolution_ops(r, width_mult):
                ops.setdefault(op.key, op)
                by_res.setdefault(r, set()).add(op.key)
        return cls(width_mult, res, ops, by_res)


def reference_key(width_mult: float) -> str:
    """The reference operator: a mid-sized block (stage 2, k3 e4, r160), the same for every table."""
    return resolution_ops(160, width_mult)[30].key


def load_reference(backend: Backend, info: ReferenceInfo | None) -> Reference | None:
    """A stored reference loaded on ``backend`` (None when there is none: measurements are then raw)."""
    if info is None:
        return None
    return backend.reference(info.key, info.baseline_ms)


def table_reference(backend: Backend, table: LatencyTable) -> Reference | None:
    """The table's reference operator with its stored baseline (official tables have none)."""
    return load_reference(backend, table.metadata.reference)


def _compatible(existing: LatencyTable, metadata: TableMetadata, path: Path) -> None:
    for field in ("backend", "width_mult", "threads", "device", "measurement"):
        old, new = getattr(existing.metadata, field), getattr(metadata, field)
        if old is not None and new is not None and old != new:
            raise BadInputError(
                f"{path}: cannot resume: the table was measured with {field}={old!r}, this run has {new!r} "
                "(use another --out, or the same settings)"
            )
    old_settings, new_settings = existing.metadata.settings, metadata.settings
    for name in sorted(set(old_settings) & set(new_settings)):  # e.g. precision: one table, one precision
        if old_settings[name] != new_settings[name]:
            raise BadInputError(
                f"{path}: cannot resume: the table was measured with {name}={old_settings[name]!r}, this run has "
                f"{new_settings[name]!r} (use another --out, or the same settings)"
            )


def profile_metadata(backend: Backend, device: str) -> TableMetadata:
    """Check the target and describe the measurement: what a table records about where it came from."""
    runtime = backend.check()
    return TableMetadata.new(
        device=device,
        backend=backend.name,
        runtime=runtime["runtime"],
        runtime_version=runtime["runtime_version"],
        threads=backend.timing.threads,
        timing=backend.timing,
        settings=backend.settings.recorded(),  # measurement settings only (never paths, serials, keys)
        measurement=ESTIMATED if backend.kind is TargetKind.ANALYTICAL else TIMED,
        value_field=VALUE_FIELD,
        model_parameters=runtime.get("parameters") if backend.kind is TargetKind.ANALYTICAL else None,
        target=runtime.get("details"),
    )


def start_table(out: Path, metadata: TableMetadata, resume: bool) -> LatencyTable:
    """A new table, or the one at ``out`` to continue (``--resume``); never overwrite measurements."""
    if out.exists():
        if not resume:
            raise BadInputError(f"{out} already exists; pass --resume to continue it, or choose another --out")
        table = LatencyTable.load(out)
        if table.metadata.is_official:
            raise BadInputError(f"{out}: cannot resume into an official YAML table; give a new --out")
        _compatible(table, metadata, out)
        for name in (
            "device",
            "backend",
            "runtime",
            "runtime_version",
            "threads",
            "timing",
            "settings",
            "width_mult",
            "model_parameters",
        ):
            setattr(table.metadata, name, getattr(metadata, name))
        return table
    if resume:
        log.info("note: %s does not exist yet; starting a new table", out)
    return LatencyTable(tables={}, metadata=metadata, source=str(out))


def profile(
    backend: Backend,
    plan: ProfilePlan,
    out: Path,
    metadata: TableMetadata,
    resume: bool = False,
    drift_every: int = 25,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> LatencyTable:
    """Measure every key of ``plan`` not yet in the table at ``out``; returns the table.
    ``metadata`` comes from :func:`profile_metadata` (which has checked the target). ``out`` is
    locked while this runs: a second profile on the same file is refused (exit 2). ``on_batch(n)`` is
    called after each saved batch of ``n`` keys (e.g. to drive one progress bar over several devices)."""
    with output_lock(out):
        return _profile_locked(backend, plan, out, metadata, resume, drift_every, progress, on_batch)


def _profile_locked(
    backend: Backend,
    plan: ProfilePlan,
    out: Path,
    metadata: TableMetadata,
    resume: bool,
    drift_every: int,
    progress: bool,
    on_batch: Callable[[int], None] | None = None,
) -> LatencyTable:
    table = start_table(out, dataclasses.replace(metadata, width_mult=plan.width_mult), resume)
    table.metadata.resolutions = sorted(set(table.metadata.resolutions) | set(plan.resolutions))
    measured = {key: rec for t in table.tables.values() for key, rec in t.items()}

    if table.metadata.reference is not None:
        reference = table_reference(backend, table)
    else:  # a new table: measure the reference's baseline now, once (None: the backend does not time)
        reference = backend.reference(reference_key(plan.width_mult))
        if reference is not None:
            table.metadata.reference = ReferenceInfo(reference.key, reference.baseline_ms)
    if table.metadata.call_overhead_ms is None:
        table.metadata.call_overhead_ms = backend.measure_overhead(reference).estimate
    overhead = table.metadata.call_overhead_ms
    drift = table.metadata.drift

    def place(key: str, record: dict[str, float]) -> None:
        for r, keys in plan.keys_by_resolution.items():
            if key in keys:
                table.tables.setdefault(r, {})[key] = record

    for key, record in measured.items():  # a resumed table may cover new resolutions with known keys
        place(key, record)
    todo = [op for key, op in plan.ops.items() if key not in measured]
    # A seeded random order: a slow spell of the machine then lands on keys of every resolution and
    # stage (noise that averages out in a network's sum) instead of on one resolution's block of
    # keys (a bias every prediction at that resolution would inherit).
    random.Random(len(plan.ops)).shuffle(todo)
    before = backend.conditions()
    table.save(out)
    bar = _progress(len(plan.ops), len(plan.ops) - len(todo), enabled=progress)
    started = time.time()
    try:
        step = max(1, backend.batch_size)
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            with measuring(backend, bar, len(chunk)):
                results = backend.measure(chunk, reference)
            for j, op in enumerate(chunk):
                stats = results[op.key]
                i = start + j
                if reference is not None and (i % drift_every == 0 or i == len(todo) - 1):
                    drift.append(DriftPoint(len(measured) + i, stats.reference_ms, round(time.time() - started, 2)))
                place(op.key, stats.table_record(overhead))
            table.save(out)
            if on_batch is not None:
                on_batch(len(chunk))
    except OFADeployError as exc:
        table.save(out)
        raise type(exc)(f"{exc} (measured keys are saved in {out}; rerun with --resume to continue)") from None
    finally:
        bar.close()
    if before is not None:
        table.metadata.conditions = {"before": before, "after": backend.conditions()}
        table.save(out)
    return table


def baseline_offset(table: LatencyTable) -> float:
    """The reference operator's median latency while profiling over its stored baseline (1.0: the
    table's milliseconds are this machine's). The baseline is timed alone before the first batch;
    when the batches run it at another speed (loaded together with many models, clocks that moved),
    every normalised entry is off from wall-clock time by this factor, though consistent with
    itself and with ``validate`` (which normalises to the same baseline)."""
    values = [d.ms for d in table.metadata.drift if d.ms]
    reference = table.metadata.reference
    if not values or reference is None or not reference.baseline_ms:
        return 1.0
    return float(np.median(values)) / reference.baseline_ms


def drift_ratio(table: LatencyTable) -> float:
    """max/min of the reference operator's raw timings during profiling (1.0 = no drift)."""
    values = [d.ms for d in table.metadata.drift if d.ms]
    return max(values) / min(values) if len(values) > 1 else 1.0


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="profiling",
        unit="key",
        disable=not enabled or None,
        file=sys.stderr,
        dynamic_ncols=True,
    )
