"""The backend plugin interface, the shared timing protocol, and backend discovery.

A backend turns a graph (one operator, or a whole sub-network) into something it can run on its
target, and times it. Built-in backends and third-party ones are found through the entry-point
group ``ofa_deploy.backends`` (``name = "package.module:Class"``); a missing runtime becomes one
line naming the pip extra, never a traceback.

Timing protocol, shared by latency-table entries and end-to-end checks so the two are comparable
on a noisy machine: a few warm-up runs, then ``rounds`` rounds of ``runs`` timed runs; a round's
figure is its minimum (minima move far less than means when other processes share the CPU).

Machine speed also shifts in regimes of seconds (shared hosts, DVFS, thermal throttling: on this
kind of machine the same network measured twice a few seconds apart differed by up to 16%). So
each round also times a fixed *reference* operator right after the model, and the estimate is
``median(round ratio model/reference) x reference baseline``, where the baseline is the
reference's latency when the table was profiled. Both the table entries and every end-to-end
measurement are expressed this way, in the table's time units, which took the repeatability of
end-to-end measurements from 16% to under 2% here. The raw figure (median of round minima, no
normalisation) and the reference's own latency are kept alongside, so drift is visible, not hidden.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ofa_deploy.deploy.graph.ir import GlobalAvgPool, Graph
from ofa_deploy.errors import BadInputError, OFADeployError, RuntimeMissingError
from ofa_deploy.space.ops import OpSpec

ENTRY_POINT_GROUP = "ofa_deploy.backends"
BUILTIN_BACKENDS = {
    "onnxruntime": "ofa_deploy.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "ofa_deploy.backends.openvino:OpenVinoBackend",
    "tflite": "ofa_deploy.backends.tflite:TFLiteBackend",
    "adb": "ofa_deploy.backends.adb:AdbBackend",
}


@dataclass
class LatencyStats:
    """Timings of one model, in milliseconds."""

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


@dataclass
class TimingOptions:
    threads: int = 1
    warmup: int = 5
    rounds: int = 10
    runs: int = 10
    instances: int = 1  # fresh model instances the rounds alternate between (memory layout varies per instance)

    def __post_init__(self) -> None:
        for name in ("threads", "rounds", "runs", "instances"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(f"timing option '{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise BadInputError(f"timing option 'warmup' must be a non-negative integer, got {self.warmup!r}")


@dataclass
class Reference:
    """The fixed operator timed beside every measurement, and its latency at profiling time."""

    key: str
    run: Callable[[], Any]
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
    for runner in runners:
        for _ in range(options.warmup):
            runner()
    rounds, ref_minima = [], []
    for i in range(options.rounds):
        rounds.append(_timed(runners[i % len(runners)], options.runs))
        if reference is not None:
            ref_minima.append(min(_timed(reference.run, options.runs)))
    if reference is None:
        return LatencyStats.from_rounds(rounds)
    return LatencyStats.from_rounds(rounds, ref_minima, reference.baseline_ms)


def overhead_graph() -> Graph:
    """The smallest model every runtime accepts: global pooling of a 1x8x1x1 tensor.

    Its latency is the runtime's fixed cost per inference call, paid once by a whole network
    but once per operator by per-operator models.
    """
    return Graph("input", (1, 8, 1, 1), "pooled", (1, 8, 1, 1), [GlobalAvgPool("input", "pooled")])


@dataclass
class Artifact:
    """A compiled model in a bundle directory: what a deployment needs to feed and read it."""

    files: list[str]  # file names inside the bundle directory, the main model first
    input_name: str
    input_shape: list[int]
    layout: str  # "NCHW" or "NHWC"
    output_name: str
    output_shape: list[int]

    @property
    def main(self) -> str:
        return self.files[0]


class Backend(ABC):
    """One target. Subclasses set the class attributes and implement :meth:`runtime_info` and
    :meth:`load` (and, to compile, :meth:`export` and :meth:`load_artifact`); everything else has a
    working default."""

    name: ClassVar[str]
    extra: ClassVar[str]  # pip extra that installs the runtime
    description: ClassVar[str]
    artifact_suffix: ClassVar[str]
    # Operators per measure() call while profiling (and per table save): 1 on the host; a remote
    # target such as a phone measures many models per round trip.
    batch_size: ClassVar[int] = 1
    # Whether timings are taken on this machine (so its load matters; see ofa_deploy.backend.host.busy_warning).
    times_on_host: ClassVar[bool] = True

    def __init__(self, timing: TimingOptions | None = None, **settings: Any) -> None:
        self.timing = timing or TimingOptions()
        unknown = set(settings) - set(self.settings_schema())
        if unknown:
            raise BadInputError(
                f"backend '{self.name}' has no setting(s) {sorted(unknown)}; known: {sorted(self.settings_schema())}"
            )
        self.settings = settings

    @classmethod
    def settings_schema(cls) -> dict[str, str]:
        """Backend-specific settings a device profile may give (name -> description)."""
        return {}

    @abstractmethod
    def runtime_info(self) -> dict[str, str]:
        """``{"runtime": ..., "runtime_version": ...}``; raises RuntimeMissingError if not installed."""

    @abstractmethod
    def load(self, graph: Graph) -> Callable[[], Any]:
        """Prepare ``graph`` on the target; return a callable that runs one inference."""

    def check(self) -> dict[str, Any]:
        """Is the target usable? Returns what it is; raises a TargetUnavailableError if not."""
        return {**self.runtime_info(), "threads": self.timing.threads, "target": self.description}

    def measure_graph(self, graph: Graph, reference: Reference | None = None) -> LatencyStats:
        return time_runner([self.load(graph) for _ in range(self.timing.instances)], self.timing, reference)

    def measure(self, ops: Sequence[OpSpec], reference: Reference | None = None) -> dict[str, LatencyStats]:
        """Latency of each operator alone (one small model per operator)."""
        from ofa_deploy.deploy.graph.ir import build_graph

        return {op.key: self.measure_graph(build_graph([op]), reference) for op in ops}

    def measure_overhead(self, reference: Reference | None = None) -> LatencyStats:
        return self.measure_graph(overhead_graph(), reference)

    # -------------------------------------------------------------- deployment artifacts
    def export(self, graph: Graph, directory: Path) -> Artifact:
        """Write the backend's artifact for ``graph`` (real weights) into ``directory``."""
        raise OFADeployError(f"backend '{self.name}' cannot compile artifacts")

    def load_artifact(self, directory: Path, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray]:
        """A function running the artifact on one input (in the artifact's layout)."""
        raise OFADeployError(f"backend '{self.name}' cannot run artifacts")

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyStats:
        """Time the artifact on the target with the same protocol as the latency table."""
        x = np.random.default_rng(0).standard_normal(artifact.input_shape, dtype=np.float32)
        runners = []
        for _ in range(self.timing.instances):
            run = self.load_artifact(directory, artifact)
            runners.append(lambda run=run: run(x))
        return time_runner(runners, self.timing, reference)

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        """Load the reference operator; without a baseline, measure it now (at profiling time)."""
        from ofa_deploy.deploy.graph.ir import build_graph

        run = self.load(build_graph([OpSpec.from_key(key)]))
        if baseline_ms is None:
            many = TimingOptions(self.timing.threads, self.timing.warmup, max(self.timing.rounds, 9), self.timing.runs)
            baseline_ms = time_runner(run, many).raw_estimate
        return Reference(key, run, baseline_ms)


def _missing_runtime(backend: str, extra: str, package: str) -> RuntimeMissingError:
    return RuntimeMissingError(
        f"backend '{backend}' needs the '{package}' package, which is not installed: pip install 'ofa-deploy[{extra}]'"
    )


def require_module(backend: str, extra: str, module: str, package: str | None = None):
    """Import a runtime module or fail with the one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing_runtime(backend, extra, package or module) from None


def backend_registry() -> dict[str, str]:
    """Backend name -> ``module:Class``: built-ins plus every installed plugin."""
    registry = dict(BUILTIN_BACKENDS)
    try:
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            registry[ep.name] = ep.value
    except Exception:  # a broken third-party distribution must not break the toolkit
        pass
    return registry


def backend_class(name: str) -> type[Backend]:
    registry = backend_registry()
    if name not in registry:
        raise BadInputError(f"unknown backend '{name}'; known backends: {', '.join(sorted(registry))}")
    module_name, _, class_name = registry[name].partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise OFADeployError(f"backend '{name}' could not be loaded from {registry[name]} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise OFADeployError(f"backend '{name}' ({registry[name]}) is not an ofa_deploy.backend.interface.Backend")
    return cls


def create_backend(name: str, timing: TimingOptions | None = None, **settings: Any) -> Backend:
    return backend_class(name)(timing=timing, **settings)
