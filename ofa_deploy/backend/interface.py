"""The backend interface: one small contract, three kinds of targets.

Every backend declares who it is and what it needs (class attributes), answers :meth:`check`
(is the target reachable, what is attached), measures operators and whole networks, and compiles
and benchmarks artifacts. The three kinds differ in *how* they get a latency, and each has a base
class that implements the common parts, so a new backend is one file:

* :class:`LocalRuntimeBackend` (onnxruntime, openvino, tflite, nvidia): a runtime in this
  process. Implement ``runtime_info``, ``load`` (graph -> callable), ``compile`` and
  ``load_artifact``; the base class warms up and times in rounds with the drift reference
  (:mod:`ofa_deploy.backend.timing`).
* :class:`RemoteDeviceBackend` (adb, TVM RPC): a device behind a connection. Implement ``open``
  and ``close`` (the CLI always closes: on success, errors and Ctrl-C), ``encode`` (graph -> the
  bytes the device runs) and ``measure_models`` (many models per round trip); the base class
  batches operators, whole networks and artifacts through it.
* :class:`AnalyticalBackend` (fpga): a cost model. Implement ``runtime_info`` and ``estimate``
  (graph -> ms); results are :class:`~ofa_deploy.backend.timing.LatencyEstimate`, no timing
  statistics, no reference, and the LUT records that its values are estimates.

Optional roles, declared by also deriving from them (the CLI asks ``isinstance``): :class:`Builder`
(a poolable build step: tvm), :class:`OutputParser` (reads the target's own benchmark tool: adb),
:class:`ModelFileRunner` (benchmarks any model file: onnxruntime, openvino, tflite),
:class:`Deployer` (installs bundles: adb) and :class:`DesignSpace` (resizable modelled hardware:
fpga).

Backends are found through the entry-point group ``ofa_deploy.backends`` (see
:mod:`ofa_deploy.backend.registry`). A backend module must import its runtime lazily (through
:func:`require_module`), so listing backends never needs the runtimes, and a missing runtime is one
line naming the pip extra. Writing one: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from ofa_deploy.backend.artifact import Artifact
from ofa_deploy.backend.diagnosis import Finding, Verdict, attempt
from ofa_deploy.backend.fingerprint import IDENTITY_KEYS
from ofa_deploy.backend.model_file import ModelSession
from ofa_deploy.backend.settings import BackendSettings, parse_settings
from ofa_deploy.backend.timing import (
    LatencyEstimate,
    LatencyStats,
    Measurement,
    Reference,
    TimingOptions,
    time_interleaved,
    time_runner,
)
from ofa_deploy.backend.tool_output import ToolRun
from ofa_deploy.errors import BadInputError, OFADeployError, RuntimeMissingError
from ofa_deploy.graph.ir import GlobalAvgPool, Graph, build_graph
from ofa_deploy.space.ops import OpSpec

VERIFY_TOLERANCE = 1e-4  # largest logit difference from torch over max(1, largest |logit|), float32 runtimes


class TargetKind(str, Enum):
    """How a backend gets a latency: timed in this process, timed on a device, or estimated by a model."""

    LOCAL_RUNTIME = "timed local runtime"
    REMOTE_DEVICE = "remote device"
    ANALYTICAL = "analytical model"


@dataclass(frozen=True)
class CliOption:
    """A command-line flag a backend adds to every verb that reaches its target.

    The flag fills the setting ``setting`` (and wins over the device profile's value)."""

    flag: str  # e.g. "--serial"
    setting: str  # the settings field it fills
    help: str
    type: Callable[[str], Any] = str
    metavar: str | None = None
    repeatable: bool = False  # may be given several times (e.g. --serial S1 --serial S2: one target each)


@dataclass(frozen=True)
class Target:
    """A device a backend can reach right now, as ``devices`` lists it and ``--all-devices`` uses it."""

    id: str  # what the backend's target flag takes (adb: --serial; nvidia: --gpu)
    state: str = "ready"  # the backend's word for it (adb: device, offline, unauthorized)
    ready: bool = True  # usable now: --all-devices takes only these
    details: dict[str, Any] = field(default_factory=dict)  # what else is known (model, memory, ...)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "ready": self.ready, **self.details}


@dataclass
class BackendStatus:
    """What ``ofa-deploy devices`` shows for one backend."""

    name: str
    kind: str
    description: str
    available: bool
    runtime: str = ""
    runtime_version: str = ""
    reason: str = ""  # why it is not available
    extra: str = ""
    targets: list[dict[str, Any]] = field(default_factory=list)  # attached devices (Target.to_dict())
    settings: dict[str, str] = field(default_factory=dict)  # setting -> help
    flags: list[str] = field(default_factory=list)
    artifact_kinds: list[str] = field(default_factory=list)
    plugin: str = ""  # distribution that provides it, for third-party backends


def overhead_graph() -> Graph:
    """The smallest model every runtime accepts: global pooling of a 1x8x1x1 tensor.

    Its latency is the runtime's fixed cost per inference call, paid once by a whole network
    but once per operator by per-operator models.
    """
    return Graph("input", (1, 8, 1, 1), "pooled", (1, 8, 1, 1), [GlobalAvgPool("input", "pooled")])


def missing_runtime(backend: str, extra: str, package: str) -> RuntimeMissingError:
    """The one-line error for a runtime package that is not installed, naming the pip extra (or package)."""
    install = f"pip install 'ofa-deploy[{extra}]'" if extra else f"pip install {package}"
    return RuntimeMissingError(
        f"backend '{backend}' needs the '{package}' package, which is not installed: {install}", fix=install
    )


def require_module(backend: str, extra: str, module: str, package: str | None = None):
    """Import a runtime module or fail with the one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_runtime(backend, extra, package or module) from None


class Backend(ABC):
    """One target. Use a kind's base class below; this class holds what all kinds share.

    Subclasses set the class attributes; ``Settings`` is a frozen dataclass deriving from
    :class:`BackendSettings` (``self.settings`` is an instance, parsed and validated once). Each
    setting is declared a measurement one (recorded in LUTs and bundles) or a local one (paths,
    serials, keys, directories, connection: never recorded, never read back from a file); see
    :mod:`ofa_deploy.backend.settings`.
    Backends are context managers: ``with backend:`` closes connections on every path.
    """

    name: ClassVar[str]
    kind: ClassVar[TargetKind]
    description: ClassVar[str]
    extra: ClassVar[str] = ""  # pip extra that installs the runtime ("" = a core dependency)
    artifact_kinds: ClassVar[tuple[str, ...]] = ()  # what compile() writes and benchmark() runs, main kind first
    Settings: ClassVar[type[BackendSettings]] = BackendSettings
    cli_options: ClassVar[tuple[CliOption, ...]] = ()
    default_profile: ClassVar[str | None] = None  # the device profile used when only --backend is given
    # Operators or networks per measure call while profiling and validating (and per table save).
    batch_size: ClassVar[int] = 1
    # Whether timings are taken on this machine (so its load matters; see ofa_deploy.backend.host.busy_warning).
    times_on_host: ClassVar[bool] = True
    # Set by a caller with a progress bar: called as (done, total) while one measure call times many
    # models together (a host runtime's interleaved rounds); None: nobody is watching.
    on_progress: Callable[[int, int], None] | None = None
    # Set by ``compile`` before :meth:`compile` on an int8 target: the inputs (in the graph's input shape)
    # the network is quantized with. None: a few random inputs (all a latency measurement needs).
    calibration_inputs: list[np.ndarray] | None = None

    @property
    def precision(self) -> str:
        """The numeric precision this target runs (its ``precision`` setting; fp32 without one)."""
        return str(getattr(self.settings, "precision", "fp32"))

    @property
    def target_id(self) -> str | None:
        """The device this instance reaches, as the backend's target flag names it (adb: the serial), or
        None when it is not one of several devices (local runtimes, models, a single default device)."""
        return None

    @property
    def verify_tolerance(self) -> float:
        """Largest logit difference from torch, over max(1, largest |logit|), that ``compile``'s check of an
        artifact accepts. Exact float32 runtimes keep the default; a backend whose kernels sum in another
        order or in lower precision (GPU engines, fp16) states its own."""
        return VERIFY_TOLERANCE

    def __init__(self, timing: TimingOptions | None = None, settings_source: str | None = None, **settings: Any):
        self.timing = timing or TimingOptions()
        self.settings = parse_settings(self.Settings, settings, settings_source or f"backend '{self.name}'")

    def reconfigured(
        self, timing: TimingOptions | None = None, settings_source: str | None = None, **settings: Any
    ) -> Backend:
        """A new instance of this backend with other timing and/or settings, the rest as this one's
        (``doctor``: each attached phone, a one-run trial; fpga: every DPU design, the ReLU6
        substitute). ``settings_source`` names where the changed settings came from, for errors."""
        return type(self)(timing or self.timing, settings_source, **{**self.settings.to_dict(), **settings})

    # ------------------------------------------------------------------ identity and availability
    @abstractmethod
    def runtime_info(self) -> dict[str, str]:
        """``{"runtime": ..., "runtime_version": ...}``; raises RuntimeMissingError if not installed."""

    def check(self) -> dict[str, Any]:
        """Is the target usable? Returns what it is (recorded in LUTs and manifests);
        raises a TargetUnavailableError if not."""
        return {**self.runtime_info(), "threads": self.timing.threads, "target": self.description}

    @classmethod
    def attached_targets(cls) -> list[Target]:
        """Devices this backend can reach right now, without opening a session (for ``devices`` and
        ``--all-devices``); none by default."""
        return []

    def conditions(self) -> dict[str, Any] | None:
        """The target's operating conditions now (e.g. a GPU's clocks and temperature), recorded by
        profiling before and after a table is measured; None when the backend has none to report."""
        return None

    @classmethod
    def status(cls) -> BackendStatus:
        """Availability of the runtime and the attached targets; never raises for a missing runtime."""
        status = BackendStatus(
            name=cls.name,
            kind=cls.kind.value,
            description=cls.description,
            available=False,
            extra=cls.extra,
            settings=cls.Settings.describe(),
            flags=[o.flag for o in cls.cli_options],
            artifact_kinds=list(cls.artifact_kinds),
        )
        try:
            info = cls().runtime_info()
        except OFADeployError as exc:
            status.reason = str(exc)
            return status
        status.available = True
        status.runtime, status.runtime_version = info["runtime"], info["runtime_version"]
        try:
            status.targets = [target.to_dict() for target in cls.attached_targets()]
        except OFADeployError as exc:
            status.reason = str(exc)
        return status

    @classmethod
    def readiness(cls, settings: dict[str, Any], status: BackendStatus) -> str:
        """Why a device profile of this backend (its ``settings``) cannot be used here now, in a few
        words, or "" when it can: configured, and its target reachable. ``status`` is :meth:`status`'s.
        Cheap checks only (``devices`` asks it of every profile); ``doctor`` goes further."""
        return "" if status.available else status.reason

    def runtime_finding(self) -> Finding:
        """``doctor``'s first check: the runtime imports, with its version (else the install command)."""
        info, missing = attempt("runtime", self.runtime_info)
        if missing is not None:
            return missing
        assert info is not None
        return Finding("runtime", Verdict.OK, f"{info['runtime']} {info['runtime_version']}")

    def diagnose(self) -> list[Finding]:
        """What ``ofa-deploy doctor`` reports for this backend as configured: one :class:`Finding` per
        thing a first run needs, never raising: the runtime imports (with its version), then, if it
        does, :meth:`diagnose_target`."""
        runtime = self.runtime_finding()
        return [runtime] if runtime.verdict is Verdict.FAIL else [runtime, *self.diagnose_target()]

    def diagnose_target(self) -> list[Finding]:
        """``doctor``'s checks once the runtime imports. By default, :meth:`check` answers (which
        connects, for a remote device); a backend replaces this with what only it can check (see
        :mod:`ofa_deploy.backend.diagnosis`)."""
        answer, failure = attempt("target", self.check)
        if failure is not None:
            return [failure]
        assert answer is not None
        said = ", ".join(f"{key} {answer[key]}" for key in IDENTITY_KEYS if answer.get(key))
        return [Finding("target", Verdict.OK, said or str(answer.get("target") or self.description))]

    # ------------------------------------------------------------------ measuring
    @abstractmethod
    def measure(self, ops: Sequence[OpSpec], reference: Reference | None = None) -> dict[str, Measurement]:
        """Latency of each operator alone (one small model per operator), by key."""

    @abstractmethod
    def measure_networks(self, graphs: Sequence[Graph], reference: Reference | None = None) -> list[Measurement]:
        """Latency of each whole network, in order (a remote target does many per round trip)."""

    def measure_overhead(self, reference: Reference | None = None) -> Measurement:
        """The fixed cost of one inference call (see :func:`overhead_graph`)."""
        return self.measure_networks([overhead_graph()], reference)[0]

    @abstractmethod
    def reference(self, key: str, baseline_ms: float | None = None) -> Reference | None:
        """Load the drift reference operator; without a baseline, measure it now (at profiling time).
        None when the backend does not time (analytical models)."""

    # ------------------------------------------------------------------ deployment artifacts
    def compile(self, graph: Graph, directory: Path) -> Artifact:
        """Write the backend's artifact for ``graph`` (real weights) into ``directory``."""
        raise OFADeployError(f"backend '{self.name}' cannot compile artifacts")

    def load_artifact(self, directory: Path, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray] | None:
        """A function running the artifact on one input (in the artifact's layout), to check its
        outputs against torch; None when the target cannot return outputs (the check is then skipped)."""
        return None

    @abstractmethod
    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> Measurement:
        """Latency of the compiled artifact on the target, with the same protocol as the latency table."""

    def loads_native_code(self, artifact: Artifact) -> bool:
        """Whether :meth:`benchmark` would load native code from ``artifact`` into this process (e.g.
        a TVM library opened in-process: a shared library runs its constructors when opened). The
        toolkit then refuses a bundle that is neither signed and verified nor explicitly trusted
        (``benchmark --verify-key`` / ``--trust-native-code``; SECURITY.md)."""
        return False

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:  # noqa: B027 (optional hook: local runtimes and models hold nothing to release)
        """Release the target (connections, device files). Safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalRuntimeBackend(Backend):
    """A runtime in this process, timed on this machine (subclasses: ``load``, ``compile``, ``load_artifact``)."""

    kind = TargetKind.LOCAL_RUNTIME
    batch_size: ClassVar[int] = TimingOptions().interleave  # per instance: its timing's ``interleave``

    def __init__(self, timing: TimingOptions | None = None, settings_source: str | None = None, **settings: Any):
        super().__init__(timing, settings_source, **settings)
        # Operators or networks loaded together and timed in interleaved rounds (see time_interleaved).
        self.batch_size = self.timing.interleave

    @abstractmethod
    def load(self, graph: Graph) -> Callable[[], Any]:
        """Prepare ``graph`` (random input); return a callable that runs one inference."""

    def time_graphs(self, graphs: Sequence[Graph], reference: Reference | None) -> list[Measurement]:
        """One measurement per graph: how this runtime times several models (``measure`` and
        ``measure_networks`` both come here). By default, up to ``batch_size`` graphs are loaded at once
        and timed in interleaved rounds; a runtime that cannot hold many models at once (GPU engines)
        overrides it."""
        results: list[Measurement] = []
        size = max(1, self.batch_size)
        chunks = [graphs[start : start + size] for start in range(0, len(graphs), size)]
        report = self.on_progress
        for c, chunk in enumerate(chunks):
            runners = [[self.load(graph) for _ in range(self.timing.instances)] for graph in chunk]
            hook = None if report is None else (lambda i, n, c=c: report(c * n + i, len(chunks) * n))
            results += time_interleaved(runners, self.timing, reference, hook)
        return results

    def measure(self, ops: Sequence[OpSpec], reference: Reference | None = None) -> dict[str, Measurement]:
        return dict(zip([op.key for op in ops], self.time_graphs([build_graph([op]) for op in ops], reference)))

    def measure_networks(self, graphs: Sequence[Graph], reference: Reference | None = None) -> list[Measurement]:
        return self.time_graphs(graphs, reference)

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        run = self.load(build_graph([OpSpec.from_key(key)]))
        if baseline_ms is None:
            many = TimingOptions(self.timing.threads, self.timing.warmup, max(self.timing.rounds, 9), self.timing.runs)
            baseline_ms = time_runner(run, many).raw_estimate
        return Reference(key, run, baseline_ms)

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyStats:
        x = np.random.default_rng(0).standard_normal(artifact.input_shape, dtype=np.float32)
        runners = []
        for _ in range(self.timing.instances):
            run = self.load_artifact(directory, artifact)
            if run is None:
                raise OFADeployError(f"backend '{self.name}' cannot run its artifact")
            runners.append(lambda run=run: run(x))
        return time_runner(runners, self.timing, reference)


class RemoteDeviceBackend(Backend):
    """A device behind a connection (subclasses: ``open``, ``close``, ``encode``, ``measure_models``).

    ``open`` is called lazily by the subclass on first use or explicitly by ``check``; ``close``
    must be idempotent. Every measurement goes through :meth:`measure_models` in chunks of
    ``batch_size``, so operators, validation networks and artifacts all travel in batches.
    """

    kind = TargetKind.REMOTE_DEVICE
    batch_size: ClassVar[int] = 32
    times_on_host = False
    no_target_reason: ClassVar[str] = "no device attached"  # what `devices` says when none is listed

    @classmethod
    def readiness(cls, settings: dict[str, Any], status: BackendStatus) -> str:
        """Not ready without a usable attached target; a backend whose targets are not listed
        (reached through a flag instead) overrides this."""
        if not status.available:
            return status.reason
        if any(target.get("ready") for target in status.targets):
            return ""
        if status.targets:
            return "; ".join(f"{t['id']} is {t['state']}" for t in status.targets)
        return status.reason or cls.no_target_reason

    @abstractmethod
    def open(self) -> None:
        """Connect to the device (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Clean up on the device and hang up (idempotent)."""

    @abstractmethod
    def encode(self, graph: Graph) -> bytes:
        """What :meth:`measure_models` takes for ``graph`` (random weights are fine for timing): the
        model file the device runs (adb: ``.tflite``), or, for a backend that builds on this machine
        first, the source of that build (tvm: ONNX, built into a library per device target inside
        ``measure_models``). Only this backend reads it back."""

    @abstractmethod
    def measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        """Time each ``(label, model bytes)`` on the device in one round trip (``names``: file names to
        use on the device, e.g. the artifact's own)."""

    def _batched(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        out: list[LatencyStats] = []
        step = max(1, self.batch_size)
        for start in range(0, len(models), step):
            chunk_names = names[start : start + step] if names else None
            out += self.measure_models(models[start : start + step], reference, chunk_names)
        return out

    def measure(self, ops: Sequence[OpSpec], reference: Reference | None = None) -> dict[str, Measurement]:
        models = [(op.key, self.encode(build_graph([op]))) for op in ops]
        return dict(zip([op.key for op in ops], self._batched(models, reference)))

    def measure_networks(self, graphs: Sequence[Graph], reference: Reference | None = None) -> list[Measurement]:
        labels = ["the sub-network"] if len(graphs) == 1 else [f"sub-network {i}" for i in range(len(graphs))]
        return self._batched([(label, self.encode(g)) for label, g in zip(labels, graphs)], reference)

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyStats:
        local = Path(directory) / artifact.main
        if not local.is_file():
            raise BadInputError(f"{local}: the artifact's model file is missing")
        return self.measure_models([(str(local), local.read_bytes())], reference, names=[local.name])[0]


@dataclass(frozen=True)
class Alternative:
    """A change of settings an analytical backend can estimate: the flag to give, what it changes,
    and the latency it gives on the same model."""

    flag: str  # e.g. "--hard-swish relu6"
    what: str  # what it changes, and its price (e.g. "the ReLU6 substitute: check the network's accuracy")
    latency_ms: float
    addresses: str  # the share of the time it removes: one of the breakdown's parts ("cpu", "compute", ...)

    def to_dict(self) -> dict[str, Any]:
        return {"flag": self.flag, "what": self.what, "latency_ms": self.latency_ms, "addresses": self.addresses}


class LayerEstimate(Protocol):
    """What an analytical backend's ``estimate_layers`` returns, and ``ofa-deploy estimate`` prints.

    ``to_dict()`` holds at least ``latency_ms``, ``model`` (the cost model's name and version),
    ``cpu_fallback_layers`` (how many layers the target cannot run) and ``layers``: one row per layer
    with ``name``, ``op``, ``source_op``, ``engine``, ``bound`` (compute, memory, overhead, cpu),
    ``cycles`` and ``ms``. The FPGA model's ``CostReport`` is one."""

    @property
    def latency_ms(self) -> float:
        """The whole model, batch 1, milliseconds."""

    def throughput_fps(self, cores: int) -> float:
        """Frames per second with one thread on each of ``cores`` cores."""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON (see the class docstring for the keys ``estimate`` reads)."""


class Deployer(ABC):
    """Role of a remote-device backend that ships bundles (``ofa-deploy deploy``; docs/fleet.md):
    it installs files on the device, has the device hash them, and times an installed model in
    place. adb has it; a backend without it is refused by ``deploy`` in one line naming the role."""

    @abstractmethod
    def install_dir(self) -> str:
        """Where bundles are installed on the device unless ``--remote-dir`` says otherwise."""

    @abstractmethod
    def install(self, local_path: Path, remote_path: str) -> None:
        """Copy one file onto the device at ``remote_path`` (creating its directory)."""

    @abstractmethod
    def remote_sha256(self, remote_path: str) -> str | None:
        """SHA-256 (hex) of a file as the device itself computes it; None when the file is absent."""

    @abstractmethod
    def benchmark_installed(self, remote_path: str, reference: Reference | None = None) -> LatencyStats:
        """Time an installed model file in place (same protocol as ``benchmark``)."""

    def device_identity(self) -> dict[str, Any]:
        """Who the device is, for deployment records: what ``check`` reports (serial, model, ...)."""
        return self.check()  # type: ignore[attr-defined]


class Builder(ABC):
    """Role of a backend whose build is a step of its own on this machine (tvm: a graph lowered and
    compiled into a shared library for the board's target), run in a pool of worker processes so
    that the next models build while the target times the last ones.

    A build starts from a *source*: the graph as bytes (tvm: ONNX), so that it can cross to a
    worker process, or to another host of a cluster, and be built there. A remote-device backend
    with this role returns that source from ``encode``, and its ``measure_models`` builds what it
    times through :meth:`submit_build`; ``compile`` writes the finished build as the artifact."""

    @property
    @abstractmethod
    def build_workers(self) -> int:
        """How many builds run at once."""

    @abstractmethod
    def build_source(self, graph: Graph) -> bytes:
        """``graph`` as a build starts from it (random weights are fine for timing)."""

    @abstractmethod
    def submit_build(self, source: bytes) -> Future[bytes]:
        """Start building ``source`` (or find it already built); a future of the built artifact's bytes."""

    @abstractmethod
    def build_result(self, build: Future[bytes], what: str) -> bytes:
        """Wait for a build; a failure becomes one line saying ``what`` was being built (OFADeployError,
        TargetUnavailableError when a worker died)."""

    def build(self, graph: Graph, what: str) -> bytes:
        """Build ``graph`` now and return the artifact's bytes (``what``: for the error line)."""
        return self.build_result(self.submit_build(self.build_source(graph)), what)


class OutputParser(ABC):
    """Role of a backend that times with the target's own benchmark tool and reads what the tool
    prints (adb: TFLite's ``benchmark_model``), as nn-Meter splits profiler and parser. The parser
    is pure text in, numbers out: it is tested on recorded outputs without a device, and the
    conformance suite feeds it arbitrary text, to which it must answer with a :class:`ToolRun` or
    one :class:`~ofa_deploy.errors.OFADeployError` line, never another exception."""

    tool_name: ClassVar[str]  # the tool whose output is parsed, for messages and docs

    @classmethod
    @abstractmethod
    def parse_output(cls, text: str, model: str | None = None) -> ToolRun:
        """The timings of one run of the tool; a run that failed, crashed or printed no timings
        raises one line naming ``model`` (or the model the output names)."""


class ModelFileRunner(ABC):
    """Role of a backend that runs *any* model file of the kinds it names, not only the graphs this
    toolkit writes: ``ofa-deploy benchmark --model FILE`` (trtexec / benchmark_app parity), to set an
    OFA sub-network against the model a team ships today. ``open_model_file`` loads the file with
    random inputs of its own shapes (or ``shapes``) and, with ``op_profile``, the runtime's own
    operator profiler on. A file the runtime cannot load or run (an unsupported operator, a dynamic
    input without ``--shape``) is one BadInputError line (exit 2)."""

    model_suffixes: ClassVar[tuple[str, ...]]  # e.g. (".onnx",): what --model takes on this backend
    operator_profiler: ClassVar[str] = ""  # the runtime's profiler behind op_profile ("": none; op_profile refused)

    @abstractmethod
    def open_model_file(self, path: Path, shapes: dict[str, tuple[int, ...]], op_profile: bool = False) -> ModelSession:
        """A :class:`~ofa_deploy.backend.model_file.ModelSession` of ``path``, inputs filled."""


class DesignSpace(ABC):
    """Role of a backend whose modelled hardware can be resized (``estimate --sweep-dpu``): it lists
    every design it can stand for, each as the same backend configured as that design."""

    @abstractmethod
    def design_variants(self) -> list[tuple[dict[str, Any], Backend]]:
        """``(what the design is, e.g. {"arch": "B4096", "cores": 2}, the backend configured so)`` for
        every design, in the order a sweep reports them; other settings as this backend's."""


class AnalyticalBackend(Backend):
    """A cost model: estimates instead of timing (subclasses: ``runtime_info``, ``estimate``).

    Nothing is loaded or timed, so there is no noise and no reference operator; ``model_name`` is
    recorded with every estimate. ``estimate`` of any graph includes the per-call (invocation)
    overhead once; :meth:`invocation_overhead_ms` says what it is, so profiling can take it out of
    each operator's entry and add it back once per network. (Timed backends estimate that overhead
    by timing :func:`overhead_graph`; a model that charges per layer would count one layer too
    many that way, so a model states its overhead instead.)
    """

    kind = TargetKind.ANALYTICAL
    times_on_host = False
    batch_size: ClassVar[int] = 256

    @property
    def model_name(self) -> str:
        info = self.runtime_info()
        return f"{info['runtime']} {info['runtime_version']}"

    @abstractmethod
    def estimate(self, graph: Graph) -> float:
        """Latency of ``graph`` on the modelled target, in milliseconds."""

    def measure(self, ops: Sequence[OpSpec], reference: Reference | None = None) -> dict[str, Measurement]:
        return {op.key: LatencyEstimate(self.estimate(build_graph([op])), self.model_name) for op in ops}

    def measure_networks(self, graphs: Sequence[Graph], reference: Reference | None = None) -> list[Measurement]:
        return [LatencyEstimate(self.estimate(graph), self.model_name) for graph in graphs]

    def estimate_layers(self, layers: Sequence[Any]) -> LayerEstimate:
        """Optional: a per-layer cost report (:class:`LayerEstimate`) for any model read as layers
        (:mod:`ofa_deploy.graph.layers`); what ``ofa-deploy estimate`` prints."""
        raise BadInputError(f"backend '{self.name}' has no per-layer model, so it cannot estimate foreign models")

    def alternatives(self, layers: Sequence[Any], report: LayerEstimate) -> list[Alternative]:
        """Optional: settings that would change ``report`` a lot, each estimated (``estimate`` names
        the best as the largest lever); none by default."""
        return []

    def invocation_overhead_ms(self) -> float:
        """The fixed cost of one call that ``estimate`` adds once per graph (default: none)."""
        return 0.0

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> Measurement:
        """Optional for a model: the estimate of a compiled artifact (a cost report's, say). By default
        a model compiles nothing, so there is nothing to benchmark: exit 2, saying what to use."""
        raise BadInputError(
            f"backend '{self.name}' is a cost model with no artifact to benchmark: use `ofa-deploy predict` "
            "with its table, or `ofa-deploy estimate --model` for an ONNX file"
        )

    def measure_overhead(self, reference: Reference | None = None) -> Measurement:
        return LatencyEstimate(self.invocation_overhead_ms(), self.model_name)

    def reference(self, key: str, baseline_ms: float | None = None) -> None:
        return None
