"""The timing protocol shared by latency-table entries and end-to-end checks, and what it returns.

A few warm-up runs, then ``rounds`` rounds of ``runs`` timed runs; a round's figure is its minimum
(minima move far less than means when other processes share the CPU).

Machine speed also shifts in regimes of seconds (shared hosts, DVFS, thermal throttling: on this
kind of machine the same network measured twice a few seconds apart differed by up to 16%). So
each round also times a fixed *reference* operator right after the model, and the estimate is
``median(round ratio model/reference) x reference baseline``, where the baseline is the
reference's latency when the table was profiled. Both the table entries and every end-to-end
measurement are expressed this way, in the table's time units, which took the repeatability of
end-to-end measurements from 16% to under 2% here. The raw figure (median of round minima, no
normalisation) and the reference's own latency are kept alongside, so drift is visible, not hidden.

Several models measured together are timed *interleaved* (:func:`time_interleaved`): each round
is one pass over all of them, every model's runs followed by the reference, and a round's reference
figure is the median of the reference minima of that pass. A slow regime of the machine then hits
every model of the batch in the same rounds instead of a few models for all their rounds, and a
pass-wide reference is steadier than one reference minimum. On a shared 2-core VM whose speed
switched between regimes ~20% apart, this took the share of 32 whole networks whose two OpenVINO
measurements agree within ±5% (after the pass's common factor) from 78% to 100%, and within ±2%
from 53% to 100% (``benchmarks/bench_repeatability.py``), at the same number of timed runs.

Analytical backends do not time anything: they return :class:`LatencyEstimate`, which carries one
number and says so, instead of fabricated timing statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from ofa_deploy.errors import BadInputError


@dataclass(frozen=True)
class BatchFigure:
    """Latency and throughput at one batch size (backends that run batches: nvidia)."""

    batch_size: int
    latency_ms: float  # one call on batch_size images (reference-normalised where timed with one)
    raw_latency_ms: float

    @property
    def per_image_ms(self) -> float:
        return self.latency_ms / self.batch_size

    @property
    def throughput_images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.latency_ms if self.latency_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "latency_ms": self.latency_ms,
            "raw_latency_ms": self.raw_latency_ms,
            "per_image_ms": self.per_image_ms,
            "throughput_images_per_s": self.throughput_images_per_s,
        }


@dataclass
class LatencyStats:
    """Timings of one model on a target, in milliseconds (a timed measurement)."""

    count: int
    mean: float
    std: float
    median: float
    min: float
    p90: float
    p99: float
    estimate: float  # reference-normalised when a reference was timed, else raw_estimate
    raw_estimate: float  # median over rounds of the round minimum
    round_spread: float  # (max - min) / min of the round minima: how noisy the rounds were
    reference_ms: float | None = None  # the reference's own latency during this measurement

    measured: ClassVar[bool] = True

    @classmethod
    def from_rounds(
        cls,
        rounds: Sequence[Sequence[float]],
        reference_minima: Sequence[float] | None = None,
        reference_baseline_ms: float | None = None,
    ) -> LatencyStats:
        flat = np.asarray([t for r in rounds for t in r], dtype=np.float64)
        if flat.size == 0:
            raise ValueError("no timings")
        minima = np.asarray([min(r) for r in rounds if len(r)])
        raw = float(np.median(minima))
        estimate, reference_ms = raw, None
        if reference_minima is not None and reference_baseline_ms is not None:
            ref = np.asarray(reference_minima, dtype=np.float64)
            estimate = float(np.median(minima / ref) * reference_baseline_ms)
            reference_ms = float(np.median(ref))
        return cls(
            count=int(flat.size),
            mean=float(flat.mean()),
            std=float(flat.std(ddof=1)) if flat.size > 1 else 0.0,
            median=float(np.median(flat)),
            min=float(flat.min()),
            p90=float(np.percentile(flat, 90)),
            p99=float(np.percentile(flat, 99)),
            estimate=estimate,
            raw_estimate=raw,
            round_spread=float((minima.max() - minima.min()) / minima.min()) if minima.min() > 0 else 0.0,
            reference_ms=reference_ms,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def table_record(self, overhead_ms: float) -> dict[str, float | None]:
        """A latency-table entry: the official fields (count, mean, std), the runs' median, p90 and p99,
        and the robust estimate predictions use, with the per-call overhead taken out (it is added back
        once per network). The run count says how far the tail figures can be trusted."""
        return {
            "count": self.count,
            "mean": max(self.mean - overhead_ms, 0.0),
            "std": self.std,
            "median": max(self.median - overhead_ms, 0.0),
            "min": max(self.min - overhead_ms, 0.0),
            "p90": max(self.p90 - overhead_ms, 0.0),
            "p99": max(self.p99 - overhead_ms, 0.0),
            "estimate": max(self.estimate - overhead_ms, 0.0),
            "raw_estimate": max(self.raw_estimate - overhead_ms, 0.0),
            "reference_ms": self.reference_ms,
            "round_spread": self.round_spread,
        }

    def per_batch(self) -> list[BatchFigure]:
        """Figures at every batch size the benchmark ran, smallest first (none: a batch-1 runtime)."""
        return []

    def summary(self) -> dict[str, Any]:
        """What a benchmark result records."""
        return {
            "measured": True,
            "latency_ms": {
                "mean": self.mean,
                "median": self.median,
                "p90": self.p90,
                "p99": self.p99,
                "std": self.std,
                "min": self.min,
                "count": self.count,
            },
            "measured_ms": self.estimate,
            "measured_raw_ms": self.raw_estimate,
        }


@dataclass
class LatencyEstimate:
    """The latency an analytical model gives for one model: a single number, no timing statistics."""

    estimate: float
    model: str = ""  # which cost model (name and version)

    measured: ClassVar[bool] = False
    reference_ms: ClassVar[None] = None

    @property
    def raw_estimate(self) -> float:
        return self.estimate

    @property
    def std(self) -> float:
        return 0.0

    def table_record(self, overhead_ms: float) -> dict[str, float | str]:
        """``count: 0`` says no run was timed; ``mean`` holds the estimate so official YAML exports carry it."""
        value = max(self.estimate - overhead_ms, 0.0)
        return {"count": 0, "mean": value, "std": 0.0, "estimate": value}

    def summary(self) -> dict[str, Any]:
        return {"measured": False, "estimated_by": self.model, "measured_ms": self.estimate, "latency_ms": None}


Measurement = LatencyStats | LatencyEstimate


@dataclass
class TimingOptions:
    """How a model is timed: threads, warm-up runs, ``rounds`` of ``runs`` timed runs, instances, interleaving."""

    threads: int = 1
    warmup: int = 5
    rounds: int = 10
    runs: int = 10
    instances: int = 1  # fresh model instances the rounds alternate between (memory layout varies per instance)
    interleave: int = 128  # models loaded together and timed in interleaved rounds (1: one after another)

    def __post_init__(self) -> None:
        for name in ("threads", "rounds", "runs", "instances", "interleave"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"timing option '{name}' must be a positive integer, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise BadInputError(f"timing option 'warmup' must be a non-negative integer, got {self.warmup!r}")

    @classmethod
    def from_dict(cls, data: Any, source: str) -> TimingOptions:
        """Timing options from a profile, a LUT or a manifest; names the file and the field at fault."""
        if not isinstance(data, dict):
            raise BadInputError(f"{source}: 'timing' must be a mapping")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise BadInputError(
                f"{source}: unknown timing option(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        try:
            return cls(**data)
        except BadInputError as exc:
            raise BadInputError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Reference:
    """The fixed operator timed beside every measurement, and its latency at profiling time.

    ``run`` runs it once where it lives (None for a remote target, which runs it on the device)."""

    key: str
    run: Callable[[], Any] | None
    baseline_ms: float


def _timed(run: Callable[[], Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def time_runner(
    run: Callable[[], Any] | Sequence[Callable[[], Any]], options: TimingOptions, reference: Reference | None = None
) -> LatencyStats:
    """Warm up, then time ``rounds`` x ``runs`` calls (each round followed by the reference).

    ``run`` may be several instances of the same model; rounds then alternate between them, so one
    instance's unlucky memory placement does not decide the figure.
    """
    runners = list(run) if isinstance(run, (list, tuple)) else [run]
    return time_interleaved([runners], options, reference)[0]


def time_interleaved(
    models: Sequence[Sequence[Callable[[], Any]]],
    options: TimingOptions,
    reference: Reference | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> list[LatencyStats]:
    """Time several models in interleaved rounds; one :class:`LatencyStats` per model, in order.

    ``models[j]`` holds the instances of model ``j`` (rounds alternate between them). Every round is
    one pass over all models: ``runs`` timed calls of the model, then ``runs`` of the reference. The
    round's reference figure is the median of that pass's reference minima, so each model's estimate
    is ``median over rounds(model minimum / pass reference) x baseline``. With one model this is the
    plain sequential protocol. ``on_round(done, total)`` is called after every round (progress bars).
    """
    groups = [list(instances) for instances in models]
    if not groups or any(not instances for instances in groups):
        raise ValueError("time_interleaved needs at least one instance of every model")
    for instances in groups:
        for runner in instances:
            for _ in range(options.warmup):
                runner()
    timed_reference = reference is not None and reference.run is not None
    rounds: list[list[list[float]]] = [[] for _ in groups]
    pass_reference: list[float] = []
    for i in range(options.rounds):
        minima = []
        for j, instances in enumerate(groups):
            rounds[j].append(_timed(instances[i % len(instances)], options.runs))
            if timed_reference:
                minima.append(min(_timed(reference.run, options.runs)))
        if timed_reference:
            pass_reference.append(float(np.median(minima)))
        if on_round is not None:
            on_round(i + 1, options.rounds)
    if not timed_reference:
        return [LatencyStats.from_rounds(r) for r in rounds]
    return [LatencyStats.from_rounds(r, pass_reference, reference.baseline_ms) for r in rounds]
