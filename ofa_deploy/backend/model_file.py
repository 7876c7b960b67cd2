"""Benchmarking any model file, as ``trtexec``, ``benchmark_model`` and ``benchmark_app`` do.

A backend with the :class:`~ofa_deploy.backend.interface.ModelFileRunner` role opens a model file of
a kind it runs (``.onnx``, an OpenVINO ``.xml``, a ``.tflite``) as a :class:`ModelSession` with
random inputs of the model's own shapes (or those given as ``--shape NAME:1x3x224x224``); this module
times it (warm-up, then one timed call at a time) and reports the statistics those tools print:
min, mean, median, p90, p99, standard deviation, coefficient of variation and throughput. With
operator profiling on, the session also says where the time went, from the runtime's own profiler.
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ofa_deploy.backend.tool_output import OperatorTiming
from ofa_deploy.errors import BadInputError

HIGH_CV = 0.10  # a coefficient of variation above this: the figures are noisy (trtexec warns likewise)
MAX_DIM = 1 << 16
_SHAPE = re.compile(r"^(?P<name>[^:]+):(?P<dims>\d+(?:x\d+)*)$")


def parse_shapes(texts: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``--shape NAME:1x3x224x224`` flags as ``{name: shape}``; BadInputError for a malformed one."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts or []:
        match = _SHAPE.match(text.strip())
        if not match:
            raise BadInputError(f"--shape {text!r}: expected NAME:DIMS, e.g. input:1x3x224x224")
        dims = tuple(int(d) for d in match["dims"].split("x"))
        if not all(0 < d <= MAX_DIM for d in dims):
            raise BadInputError(f"--shape {text!r}: every dimension must be between 1 and {MAX_DIM}")
        shapes[match["name"]] = dims
    return shapes


def resolve_shape(model: str, name: str, declared: Sequence[Any], given: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape to feed input ``name``: ``--shape``'s, else the model's own when every dimension is fixed."""
    if name in given:
        return given[name]
    dims = [d if isinstance(d, int) and d > 0 else None for d in declared]
    if any(d is None for d in dims):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise BadInputError(f"{model}: input '{name}' has a dynamic shape ({shown}); give --shape {name}:1x3x224x224")
    return tuple(dims)  # type: ignore[arg-type]


def random_input(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """Seeded random data of ``dtype``: normal floats, small integers, booleans."""
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(tuple(shape)).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, tuple(shape)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -8), min(info.max, 8), tuple(shape), endpoint=True).astype(dtype)


class ModelSession(ABC):
    """One model file loaded by a runtime, its inputs filled: run it, and ask where the time went."""

    inputs: dict[str, tuple[int, ...]]  # what is fed, by input name

    @abstractmethod
    def run(self) -> None:
        """One inference."""

    def operator_times(self) -> list[OperatorTiming] | None:
        """Mean time per operator over the profiled runs (the runtime's own profiler), or None when
        this session was opened without profiling or the runtime cannot say."""
        return None

    def close(self) -> None:  # noqa: B027 (optional: most runtimes release on garbage collection)
        """Release the runtime's resources (and any profile file it wrote)."""


@dataclass(frozen=True)
class RunStatistics:
    """The statistics of timed runs, as trtexec reports them (times in ms)."""

    warmup_runs: int
    runs: int
    min: float
    mean: float
    median: float
    p90: float
    p99: float
    max: float
    std: float
    cv: float  # std / mean
    throughput_per_s: float  # inferences per second, one at a time

    @classmethod
    def of(cls, times_ms: Sequence[float], warmup_runs: int) -> RunStatistics:
        t = np.asarray(times_ms, dtype=float)
        mean = float(t.mean())
        std = float(t.std(ddof=1)) if len(t) > 1 else 0.0
        return cls(
            warmup_runs=warmup_runs,
            runs=len(t),
            min=float(t.min()),
            mean=mean,
            median=float(np.median(t)),
            p90=float(np.percentile(t, 90)),
            p99=float(np.percentile(t, 99)),
            max=float(t.max()),
            std=std,
            cv=std / mean if mean > 0 else math.inf,
            throughput_per_s=1000.0 / mean if mean > 0 else math.inf,
        )

    @property
    def noisy(self) -> bool:
        return self.cv > HIGH_CV

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_session(session: ModelSession, warmup: int, runs: int) -> RunStatistics:
    """``warmup`` untimed runs, then ``runs`` runs timed one at a time (wall clock, ms)."""
    return time_sessions([session], warmup, runs)[0]


def time_sessions(sessions: Sequence[ModelSession], warmup: int, runs: int) -> list[RunStatistics]:
    """Several models compared on one target: ``warmup`` untimed runs each, then ``runs`` rounds in
    which every model runs once, timed alone (wall clock, ms). Interleaving puts a slow drift of the
    machine (clocks, heat, another job) on every model alike instead of on whichever ran last."""
    for session in sessions:
        for _ in range(warmup):
            session.run()
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for session, own in zip(sessions, times):
            start = time.perf_counter()
            session.run()
            own.append((time.perf_counter() - start) * 1e3)
    return [RunStatistics.of(own, warmup) for own in times]


def merge_operator_times(rows: Sequence[tuple[str, str, float]], runs: int) -> list[OperatorTiming]:
    """``(name, type, total ms over all profiled runs)`` rows -> one mean per operator, slowest first,
    each with its share of the operators' total."""
    totals: dict[str, list[Any]] = {}
    for name, kind, ms in rows:
        entry = totals.setdefault(name, [kind, 0.0, 0])
        entry[1] += ms
        entry[2] += 1
    whole = sum(entry[1] for entry in totals.values()) or 1.0
    out = [
        OperatorTiming(kind, name, None, total / max(runs, 1), 100.0 * total / whole, count // max(runs, 1) or 1)
        for name, (kind, total, count) in totals.items()
    ]
    return sorted(out, key=lambda op: op.avg_ms, reverse=True)
