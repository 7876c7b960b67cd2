"""Jetson (and any TVM RPC target): TVM Relax builds timed with ``time_evaluator`` over TVM RPC.

Each operator (or whole network) is written as ONNX, imported into Relax, built for the device
profile's target in worker processes on this machine (:mod:`ofa_deploy.backends.tvm.build`),
linked for the board's CPU (:mod:`ofa_deploy.backends.tvm.cross`), uploaded through an RPC
session and timed there in rounds, each followed by the drift reference operator
(:mod:`ofa_deploy.backends.tvm.rpc`). Devices come from a TVM tracker under a key (several at
once share a batch; a device that drops out hands its work to the others or to a replacement),
from one direct server, or, for ``tvm-llvm-host``, from this process. CUDA code for a board is
compiled here without a GPU (:mod:`ofa_deploy.backends.tvm.cuda`). Setup and figures: docs/tvm.md.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import Artifact, elf_machine
from ofa_deploy.backend.build_cache import BuildCache, user_cache_dir
from ofa_deploy.backend.diagnosis import Finding
from ofa_deploy.backend.interface import BackendStatus, Builder, CliOption, RemoteDeviceBackend, missing_runtime
from ofa_deploy.backend.quantization import check_precision
from ofa_deploy.backend.settings import LOCAL, BackendSettings, setting
from ofa_deploy.backend.timing import LatencyStats, Reference, TimingOptions
from ofa_deploy.backends.tvm.build import BuildPool, BuildSpec, cuda_architectures, parse_target
from ofa_deploy.backends.tvm.cross import LINKERS
from ofa_deploy.backends.tvm.cuda import Nvrtc, cuda_newer_than_board
from ofa_deploy.backends.tvm.rpc import (
    Connection,
    DeviceLostError,
    DeviceSession,
    Endpoint,
    Loaded,
    registered_servers,
)
from ofa_deploy.errors import BadInputError, OFADeployError, TargetUnavailableError
from ofa_deploy.files import atomic_write_bytes
from ofa_deploy.graph.ir import Graph, build_graph
from ofa_deploy.graph.onnx_writer import to_onnx
from ofa_deploy.space.ops import OpSpec

log = logging.getLogger(__name__)
TVM_LIBRARY = "tvm-library"
LIBRARY_FILE = "model.so"


# Measured with apache-tvm 0.27 (docs/int8.md): the QDQ ONNX converts and builds, but as float32 conv2d between
# R.quantize/R.dequantize, so timing it would not be timing an int8 deployment.
TVM_INT8_REASON = (
    "Relax's ONNX frontend reads the int8 QDQ model as float32 convolutions between quantize and dequantize: "
    "no integer kernels, so its time would not be an int8 deployment's"
)


@dataclass(frozen=True)
class TvmSettings(BackendSettings):
    """Settings of the tvm backend: target and build are recorded; RPC endpoints, workers and build cache are local."""

    target: str = setting("llvm", "TVM target: a kind ('llvm') or TVM's JSON dict form")
    target_host: str | None = setting(None, "CPU target (JSON dict) of a GPU target's host, e.g. aarch64 llvm")
    cross_compiler: str = setting("host", "linker for the library: host (g++), zig (ziglang wheel) or gcc (apt)")
    board_cuda: str | None = setting(None, "CUDA version of the board's JetPack: warn when building with newer")
    needs_device: bool = setting(False, "the target is a board: measuring needs --rpc-tracker/--rpc-key or --rpc")
    # how to reach the devices today, and this machine's build parallelism: never recorded (LOCAL)
    rpc_tracker: str | None = setting(None, "TVM RPC tracker HOST:PORT (with rpc_key)", LOCAL)
    rpc_key: str | None = setting(None, "device key registered at the tracker", LOCAL)
    rpc: str | None = setting(None, "a single TVM RPC server HOST:PORT (no tracker)", LOCAL)
    rpc_timeout: float = setting(60.0, "seconds to get a device and for each request to it", LOCAL)
    rpc_sessions: int = setting(0, "devices under the key to use at once (0: every server registered)", LOCAL)
    build_workers: int = setting(1, "processes building libraries in parallel on this machine", LOCAL)
    build_cache: str = setting("", "built libraries kept between runs ('off': none; default: the user cache)", LOCAL)
    batch_size: int = setting(16, "operators or networks per batch (and per table save)")
    min_repeat_ms: int = setting(0, "time_evaluator min_repeat_ms: repeat runs until a timing lasts this long")
    precision: str = setting("fp32", "fp32 (Relax reads a QDQ model into float32 convolutions: no int8 kernels)")

    def validate(self) -> None:
        check_precision("tvm", self.precision, ("fp32",), TVM_INT8_REASON)
        if self.rpc_tracker and not self.rpc_key:
            raise ValueError("rpc_key: --rpc-tracker needs --rpc-key KEY")
        if self.rpc_key and not self.rpc_tracker:
            raise ValueError("rpc_tracker: --rpc-key needs --rpc-tracker HOST:PORT")
        if self.rpc and self.rpc_tracker:
            raise ValueError("rpc: give either --rpc HOST:PORT or --rpc-tracker/--rpc-key, not both")
        for flag, value in (("--rpc-tracker", self.rpc_tracker), ("--rpc", self.rpc)):
            if value:
                try:
                    Endpoint.parse(value, flag)
                except BadInputError as exc:
                    raise ValueError(f"{flag.lstrip('-').replace('-', '_')}: {exc}") from None
        if not self.rpc_timeout > 0:
            raise ValueError("rpc_timeout: must be positive")
        for name in ("rpc_sessions", "min_repeat_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        for name in ("build_workers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be positive")
        if self.cross_compiler not in LINKERS:
            raise ValueError(f"cross_compiler: one of {', '.join(LINKERS)}, got {self.cross_compiler!r}")
        if self.board_cuda and not all(p.isdigit() for p in self.board_cuda.split(".")[:2]):
            raise ValueError(f"board_cuda: a version such as '12.6', got {self.board_cuda!r}")
        try:
            parse_target(self.target, "target")
            if self.target_host:
                parse_target(self.target_host, "target_host")
        except BadInputError as exc:
            raise ValueError(str(exc).removeprefix("tvm setting ").replace("'", "", 2)) from None


@dataclass
class _Job:
    label: str
    library: Future | bytes  # a build in flight, or a compiled library
    input_shape: tuple[int, ...]


class TvmBackend(RemoteDeviceBackend, Builder):
    """TVM RPC: a board (or this machine, in-process) times libraries built here."""

    name = "tvm"
    extra = "tvm"
    description = "Jetson (or any TVM RPC target), TVM Relax build + RPC time_evaluator"
    artifact_kinds = (TVM_LIBRARY,)
    default_profile = "tvm-llvm-host"
    Settings = TvmSettings
    settings: TvmSettings
    cli_options = (
        CliOption("--rpc-tracker", "rpc_tracker", "TVM RPC tracker to get devices from", metavar="HOST:PORT"),
        CliOption("--rpc-key", "rpc_key", "device key at the TVM RPC tracker", metavar="KEY"),
        CliOption("--rpc", "rpc", "a single TVM RPC server (no tracker)", metavar="HOST:PORT"),
        CliOption("--rpc-timeout", "rpc_timeout", "seconds to get a device and per request (default 60)", float, "S"),
        CliOption("--rpc-sessions", "rpc_sessions", "devices under the key to use at once (default: all)", int, "N"),
    )

    def __init__(
        self, timing: TimingOptions | None = None, settings_source: str | None = None, **settings: Any
    ) -> None:
        super().__init__(timing, settings_source, **settings)
        s = self.settings
        self.connection = Connection(
            tracker=Endpoint.parse(s.rpc_tracker, "--rpc-tracker") if s.rpc_tracker else None,
            key=s.rpc_key,
            server=Endpoint.parse(s.rpc, "--rpc") if s.rpc else None,
            timeout_s=s.rpc_timeout,
        )
        self.spec = BuildSpec(s.target, s.target_host, s.cross_compiler)
        self.batch_size = s.batch_size
        # in-process, this machine's load biases the figures; a board times on its own
        self.times_on_host = not self.connection.remote and not s.needs_device
        self._pool: BuildPool | None = None
        self._sessions: list[DeviceSession | None] = []
        self._references: dict[int, Loaded] = {}  # session index -> loaded reference
        self._reference_library: tuple[str, bytes, tuple[int, ...]] | None = None
        self._warned = False
        self.devices_used = 0  # sessions opened, replacements included (for reports and tests)

    # ------------------------------------------------------------------ identity
    def runtime_info(self) -> dict[str, str]:
        if find_spec("tvm") is None:
            raise missing_runtime(self.name, self.extra, "apache-tvm")
        return {"runtime": "TVM Relax (RPC time_evaluator)", "runtime_version": metadata.version("apache-tvm")}

    def check(self) -> dict[str, Any]:
        """What the target is; connects to nothing (compiling for a board needs no board)."""
        info = {**self.runtime_info(), "threads": self.timing.threads, "target": self.description}
        return {
            **info,
            "tvm_target": self.spec.target,
            "tvm_target_host": self.spec.host or "",
            "library_triple": self.spec.triple or "host",
            "cuda_arch": self.spec.cuda_arch or "",
        }  # recorded in tables and bundles: not how the devices are reached today

    def diagnose_target(self) -> list[Finding]:
        """The linker, and the way to the board (backends/tvm/doctor.py)."""
        from ofa_deploy.backends.tvm import doctor

        return doctor.diagnose(self)

    @property
    def pool(self) -> BuildPool:
        if self._pool is None:
            directory = self.settings.build_cache
            folder = Path(directory).expanduser() if directory else user_cache_dir("tvm", "libraries")
            cache = None if directory == "off" else BuildCache(folder, ".so")
            self._pool = BuildPool(self.spec, self.settings.build_workers, cache)
        return self._pool

    # ------------------------------------------------------------------ sessions
    @classmethod
    def readiness(cls, settings: dict[str, Any], status: BackendStatus) -> str:
        """Ready: TVM installed and, for a board, a tracker or server in the profile that accepts a
        connection within a second (the servers behind a tracker are `doctor`'s to check)."""
        if not status.available:
            return status.reason
        if not settings.get("needs_device"):
            return ""  # built and timed on this machine
        address = settings.get("rpc_tracker") or settings.get("rpc")
        if not address:
            return "a board: give --rpc-tracker HOST:PORT --rpc-key KEY (or --rpc HOST:PORT)"
        try:
            endpoint = Endpoint.parse(str(address), "rpc_tracker" if settings.get("rpc_tracker") else "rpc")
        except BadInputError as exc:
            return str(exc)
        try:
            socket.create_connection((endpoint.host, endpoint.port), timeout=1.0).close()
        except OSError:
            return f"{address} does not accept a connection"
        return ""

    def _require_connection(self) -> None:
        if self.settings.needs_device and not self.connection.remote:
            raise BadInputError(
                f"target {self.spec.target} runs on a board: give --rpc-tracker HOST:PORT --rpc-key KEY "
                "(or --rpc HOST:PORT) to measure on it; `compile` needs no board"
            )

    def open(self) -> None:
        """Get the devices (sessions) to measure on: in-process, one server, or N from the tracker."""
        if self._sessions:
            return
        self._require_connection()
        self._warn_cuda()
        count = 1
        if self.connection.tracker is not None:
            count = self.settings.rpc_sessions or max(
                1, registered_servers(self.connection.tracker, str(self.connection.key), self.connection.timeout_s)
            )
        self._sessions = [None]
        self._sessions[0] = self._open_session(0)  # no device at all: one line, exit 3
        for index in range(1, count):  # more devices are welcome, not required
            self._sessions.append(None)
            try:
                self._sessions[index] = self._open_session(index)
            except TargetUnavailableError as exc:
                self._sessions.pop()
                log.warning("warning: measuring on %d device(s) instead of %d (%s)", index, count, exc)
                break
        log.info("tvm: %d device session(s) via %s", len(self._sessions), self.connection.describe())

    def _open_session(self, index: int) -> DeviceSession:
        session = DeviceSession(self.connection, self.spec.device_type, self.timing.threads, index)
        self.devices_used += 1
        if self._reference_library is not None:
            label, library, shape = self._reference_library
            self._references[index] = session.load(label, library, shape)
        return session

    def _drop(self, index: int) -> None:
        self._references.pop(index, None)
        session = self._sessions[index]
        if session is not None:
            session.close()
        self._sessions[index] = None

    def close(self) -> None:
        for index in range(len(self._sessions)):
            self._drop(index)
        self._sessions = []
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            if pool.built or pool.reused:
                log.info("tvm: %d libraries built, %d from the build cache", pool.built, pool.reused)

    def _warn_cuda(self) -> None:
        if self._warned or not self.spec.cuda_arch:
            return
        self._warned = True
        warning = cuda_newer_than_board(Nvrtc().version, self.settings.board_cuda)
        if warning:
            log.warning("warning: %s", warning)

    # ------------------------------------------------------------------ building (the Builder role)
    @property
    def build_workers(self) -> int:
        return self.pool.workers

    def build_source(self, graph: Graph) -> bytes:
        """ONNX: what the build workers import into Relax."""
        return to_onnx(graph).SerializeToString()

    def submit_build(self, source: bytes) -> Future[bytes]:
        return self.pool.submit(source)

    def build_result(self, build: Future[bytes], what: str) -> bytes:
        return self.pool.result(build, what)

    # ------------------------------------------------------------------ measuring
    def encode(self, graph: Graph) -> bytes:
        """The build source (the Builder role): ``measure_models`` builds it for the board."""
        return self.build_source(graph)

    def _job(self, label: str, source: bytes) -> _Job:
        import onnx

        model = onnx.load_model_from_string(source)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        return _Job(label, self.submit_build(source), tuple(d.dim_value for d in dims))

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        """Build the reference operator, load it on every device; without a baseline, time it now."""
        self.open()  # get the devices first: a missing one fails before anything is built
        graph = build_graph([OpSpec.from_key(key)])
        library = self.build(graph, "building the reference operator")
        self._reference_library = ("reference", library, tuple(graph.input_shape))
        for index, session in enumerate(self._sessions):
            if session is not None:
                self._references[index] = session.load("reference", library, tuple(graph.input_shape))
        if baseline_ms is None:
            many = TimingOptions(self.timing.threads, self.timing.warmup, max(self.timing.rounds, 9), self.timing.runs)
            session = self._sessions[0]
            assert session is not None
            baseline_ms = self._time(session, self._references[0], None, many).raw_estimate
        return Reference(key, None, baseline_ms)

    def measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        """Build every model (in parallel processes) and time them on all devices as they are built."""
        self._require_connection()
        return self._run([self._job(label, data) for label, data in models], reference)

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyStats:
        artifact.check_kind(self.name, self.artifact_kinds, str(directory))
        local = Path(directory) / artifact.main
        if not local.is_file():
            raise BadInputError(f"{local}: the artifact's library is missing")
        self._check_runs_here(artifact, directory)
        job = _Job("the compiled sub-network", local.read_bytes(), tuple(artifact.input_shape))
        return self._run([job], reference)[0]

    def loads_native_code(self, artifact: Artifact) -> bool:
        """Without a device (tvm-llvm-host), :meth:`benchmark` opens the library in this process."""
        return not self.connection.remote

    def _check_runs_here(self, artifact: Artifact, directory: Path) -> None:
        built_for = artifact.details.get("tvm_target")
        if built_for and built_for != self.spec.target:
            raise BadInputError(
                f"{directory}: the library was built for {built_for}, this device profile targets {self.spec.target}"
            )

    def _time(
        self, session: DeviceSession, loaded: Loaded, reference: Reference | None, timing: TimingOptions
    ) -> LatencyStats:
        ref = self._references.get(session.index) if reference is not None else None
        min_ms = self.settings.min_repeat_ms
        if timing.warmup:
            session.run_times(loaded, timing.warmup, 1, 0)
        rounds, ref_minima = [], []
        for _ in range(timing.rounds):
            rounds.append(session.run_times(loaded, 1, timing.runs, min_ms))
            if ref is not None:
                ref_minima.append(min(session.run_times(ref, 1, timing.runs, min_ms)))
        if ref is None or reference is None:
            return LatencyStats.from_rounds(rounds)
        return LatencyStats.from_rounds(rounds, ref_minima, reference.baseline_ms)

    def _time_job(self, session: DeviceSession, job: _Job, reference: Reference | None) -> LatencyStats:
        library = job.library
        if isinstance(library, Future):
            library = self.build_result(library, f"building {job.label}")
        loaded = session.load(job.label.split(":", 1)[0], library, job.input_shape)
        try:
            return self._time(session, loaded, reference, self.timing)
        finally:
            session.unload(loaded)

    def _run(self, jobs: list[_Job], reference: Reference | None) -> list[LatencyStats]:
        """Time ``jobs`` on every open device at once; a device that drops out is replaced (within
        the timeout) while the others go on, and its job goes back to the queue."""
        self.open()
        queue = collections.deque(range(len(jobs)))
        results: list[LatencyStats | None] = [None] * len(jobs)
        errors: list[OFADeployError] = []  # failures that stop everything (a build that fails)
        lost: list[OFADeployError] = []  # devices gone without a replacement (the others go on)
        in_flight = [0]  # jobs being timed now: one may come back to the queue if its device is lost
        changed = threading.Condition()

        def next_job() -> int | None:
            """The next job, waiting while the queue is empty but a job in flight may come back (a
            device that finished its own job must not leave while another's job can still fail over)."""
            with changed:
                while not errors and not queue and in_flight[0]:
                    changed.wait()
                if errors or not queue:
                    return None
                in_flight[0] += 1
                return queue.popleft()

        def done(requeue: int | None = None, error: OFADeployError | None = None) -> None:
            with changed:
                in_flight[0] -= 1
                if requeue is not None:
                    queue.appendleft(requeue)
                if error is not None:
                    errors.append(error)
                changed.notify_all()

        def work(index: int) -> None:
            while (i := next_job()) is not None:
                requeue, error, replace_after = None, None, None
                try:
                    session = self._sessions[index]
                    if session is None:
                        session = self._sessions[index] = self._open_session(index)
                    results[i] = self._time_job(session, jobs[i], reference)
                except DeviceLostError as exc:
                    requeue, replace_after = i, exc
                except OFADeployError as exc:
                    error = exc
                finally:  # always, so that no other device waits for this job forever
                    done(requeue, error)
                if error is not None:
                    return
                if replace_after is not None:
                    log.warning("warning: device %d lost (%s); asking for another", index, replace_after)
                    self._drop(index)
                    try:
                        self._sessions[index] = self._open_session(index)
                    except OFADeployError as again:
                        with changed:
                            lost.append(TargetUnavailableError(f"{replace_after}; no replacement: {again}"))
                        return

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(self._sessions))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if any(r is None for r in results):  # work is missing: a build failed, or no device was left
            raise (errors or lost or [TargetUnavailableError("no TVM RPC device was left to measure on")])[0]
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ artifacts
    def compile(self, graph: Graph, directory: Path) -> Artifact:
        """Cross-compile ``graph`` (real weights) into one shared library for the board (no board needed)."""
        self._warn_cuda()
        facts = self.pool.facts()
        library = self.build(graph, "compiling the sub-network")
        machine = elf_machine(library)
        archs = cuda_architectures(library)
        arch = self.spec.cuda_arch
        if arch and int(arch.removeprefix("sm_")) not in archs:
            raise OFADeployError(
                f"the TVM library holds no compiled code for {arch} (found {archs or 'none'}); not writing it"
            )
        atomic_write_bytes(Path(directory) / LIBRARY_FILE, library)
        details = {
            "tvm_version": facts["tvm_version"],
            "tvm_target": self.spec.target,
            "tvm_target_resolved": facts["target"],
            "host_triple": self.spec.triple or "host",
            "elf_machine": machine,
            "cross_compiler": self.settings.cross_compiler,
            "cuda_arch": arch,
            "cuda_version": facts["cuda_version"],
            "cuda_code": f"cubin sm_{', sm_'.join(map(str, archs))}" if archs else None,
            "board_cuda": self.settings.board_cuda,
        }
        return Artifact.of_graph(TVM_LIBRARY, [LIBRARY_FILE], graph, details)

    def load_artifact(self, directory: Path, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray] | None:
        """Run a library built for this machine's CPU in-process; a board's library returns None
        (verification is then recorded as skipped, since this machine cannot run it)."""
        if self.spec.triple is not None or self.spec.cuda_arch:
            return None
        session = DeviceSession(Connection(), "cpu", self.timing.threads)
        loaded = session.load("artifact", (Path(directory) / artifact.main).read_bytes(), tuple(artifact.input_shape))
        return lambda x: session.outputs(loaded, np.ascontiguousarray(x, dtype=np.float32))
