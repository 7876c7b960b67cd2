"""GPU timing: the toolkit's round protocol, with each run timed by CUDA events on the engine's stream.

A host clock around an asynchronous launch measures the launch, not the kernels; CUDA events
recorded on the stream before and after each run measure what the GPU did. The protocol is the
one every latency table uses (:mod:`ofa_deploy.backend.timing`): warm-up, ``rounds`` x ``runs``,
round minima, and the drift reference timed after every round, so end-to-end checks and table
entries stay comparable. GPU tables are per *batch*: a value is the latency of one call on
``batch_size`` images (OFA's GPU tables use 64), and a benchmark adds the throughput.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ofa_deploy.backend.timing import BatchFigure, LatencyStats, Reference, TimingOptions
from ofa_deploy.graph.ir import Graph


class TimedRunner(Protocol):
    """A loaded model on the GPU: ``timed(n)`` runs it ``n`` times and returns each run's time in ms
    (measured by the device, e.g. CUDA events); calling it runs it once and waits."""

    def timed(self, n: int) -> list[float]: ...

    def __call__(self) -> Any: ...


def with_batch(graph: Graph, batch_size: int) -> Graph:
    """The same graph on ``batch_size`` images (the nodes do not depend on the batch; only the
    input and output shapes carry it, and the ONNX writer takes them from the graph)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return dataclasses.replace(
        graph,
        input_shape=(batch_size, *graph.input_shape[1:]),
        output_shape=(batch_size, *graph.output_shape[1:]),
    )


@dataclass
class GpuLatencyStats(LatencyStats):
    """Latency of one call on ``batch_size`` images, plus what a GPU benchmark reports besides."""

    batch_size: int = 1
    conditions: dict[str, Any] | None = None  # NVML snapshots before/after (see nvidia_conditions.compare)
    other_batch_sizes: list[BatchFigure] = field(default_factory=list)  # benchmark at the other batch sizes

    @property
    def throughput(self) -> float:
        """Images per second at the measured latency."""
        return 1000.0 * self.batch_size / self.estimate if self.estimate > 0 else 0.0

    def per_batch(self) -> list[BatchFigure]:
        """This measurement's batch size and the others the benchmark ran, smallest first."""
        return sorted([batch_row(self), *self.other_batch_sizes], key=lambda figure: figure.batch_size)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["batch_size"] = self.batch_size
        out["throughput_images_per_s"] = self.throughput
        out["per_batch_size"] = [figure.to_dict() for figure in self.per_batch()]
        if self.conditions is not None:
            out["gpu_conditions"] = self.conditions
        return out


def batch_row(stats: GpuLatencyStats) -> BatchFigure:
    """The figures of one batch size's measurement."""
    return BatchFigure(stats.batch_size, stats.estimate, stats.raw_estimate)


def time_gpu(
    runners: TimedRunner | Sequence[TimedRunner],
    options: TimingOptions,
    reference: Reference | None = None,
    batch_size: int = 1,
) -> GpuLatencyStats:
    """Warm up, then ``rounds`` rounds of ``runs`` device-timed runs, each round followed by the
    reference (a :class:`TimedRunner` in ``reference.run``); rounds alternate between instances."""
    runners = list(runners) if isinstance(runners, (list, tuple)) else [runners]
    for runner in runners:
        if options.warmup:
            runner.timed(options.warmup)
    reference_runner = reference.run if reference is not None else None
    rounds: list[list[float]] = []
    reference_minima: list[float] = []
    for i in range(options.rounds):
        rounds.append(runners[i % len(runners)].timed(options.runs))
        if reference_runner is not None:
            reference_minima.append(min(reference_runner.timed(options.runs)))
    if reference_runner is None:
        stats = GpuLatencyStats.from_rounds(rounds)
    else:
        stats = GpuLatencyStats.from_rounds(rounds, reference_minima, reference.baseline_ms)
    stats.batch_size = batch_size
    return stats


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,8,64"`` -> (1, 8, 64); ValueError naming the setting on anything else."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"benchmark_batch_sizes: {text!r} is not a comma-separated list of integers") from None
    if any(v < 1 or v > 4096 for v in values):
        raise ValueError(f"benchmark_batch_sizes: each batch size must be 1..4096, got {text!r}")
    return values
