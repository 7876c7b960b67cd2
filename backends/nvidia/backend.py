"""NVIDIA GPUs: TensorRT, ONNX Runtime (TensorRT or CUDA provider) or torch CUDA, timed with CUDA events.

A timed local runtime whose clock is the GPU's: every run is timed by CUDA events on the engine's
stream (:mod:`ofa_deploy.backends.nvidia.timing`), with the toolkit's rounds and drift reference.
Values are per *call on a batch* (``batch_size``, 64 in OFA's GPU tables); LUT keys stay the
official per-image keys and the batch size is recorded with the settings in the table and bundle.

Engines, in order of preference (``engine: auto`` takes the first one installed):

* ``tensorrt``: one serialized engine per operator/network, fp32 or fp16, built from the toolkit's
  ONNX with a timing cache shared across keys, cached on disk (:mod:`~ofa_deploy.backends.nvidia.engine_cache`);
* ``ort-tensorrt`` / ``ort-cuda``: onnxruntime-gpu with the TensorRT or CUDA execution provider;
* ``torch``: the graph as a torch module on a CUDA build of torch.

Without a GPU every command stops with one line naming what is missing (the driver, a CUDA device,
or the engine's package), exit 3. Conditions (GPU, driver, clocks, temperature) are recorded before
and after a table or benchmark; clocks moving more than 5% are warned about.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import ONNX, Artifact
from ofa_deploy.backend.diagnosis import Finding
from ofa_deploy.backend.interface import (
    BackendStatus,
    CliOption,
    LocalRuntimeBackend,
    Target,
    missing_runtime,
    require_module,
)
from ofa_deploy.backend.quantization import check_precision
from ofa_deploy.backend.settings import LOCAL, BackendSettings, setting
from ofa_deploy.backend.timing import Reference, TimingOptions
from ofa_deploy.backends.nvidia import conditions as nvidia_conditions
from ofa_deploy.backends.nvidia.engine_cache import EngineCache, default_cache_dir
from ofa_deploy.backends.nvidia.gpu import GpuInfo, list_gpus, select_gpu
from ofa_deploy.backends.nvidia.timing import GpuLatencyStats, batch_row, parse_batch_sizes, time_gpu, with_batch
from ofa_deploy.errors import BadInputError, OFADeployError, RuntimeMissingError, TargetUnavailableError
from ofa_deploy.graph.ir import Graph, build_graph
from ofa_deploy.space.ops import OpSpec

log = logging.getLogger(__name__)

EXTRA = "nvidia"
ENGINES = ("auto", "tensorrt", "ort-tensorrt", "ort-cuda", "torch")
PREFERENCE = ENGINES[1:]
PRECISIONS = ("fp32", "fp16")
TENSORRT_ENGINE = "tensorrt-engine"
ONNX_FILE, ENGINE_FILE = "model.onnx", "model.engine"
FP32_TOLERANCE, FP16_TOLERANCE = 1e-3, 5e-2  # on logits, against torch on the CPU (see verify_tolerance)


def _yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "on", "true", "1"):
        return True
    if value in ("no", "off", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


@dataclass(frozen=True)
class NvidiaSettings(BackendSettings):
    """Settings of the nvidia backend: engine, precision, batch size, TensorRT build; GPU index and cache are local."""

    engine: str = setting(
        "auto", "tensorrt, ort-tensorrt, ort-cuda, torch, or auto (the first installed, in that order)"
    )
    precision: str = setting("fp32", "fp32 or fp16 (fp16: TensorRT, ORT's TensorRT provider, torch)")
    batch_size: int = setting(1, "images per inference call; LUT values are per call (OFA's GPU tables: 64)")
    device_index: int = setting(0, "CUDA device index (as CUDA_VISIBLE_DEVICES leaves them)", LOCAL)
    cuda_graphs: bool = setting(False, "replay each run as a CUDA graph (one launch per network)")
    workspace_mib: int = setting(4096, "TensorRT builder workspace limit in MiB")
    engine_cache: str = setting("", "directory of cached TensorRT engines and timing caches (default ~/.cache)", LOCAL)
    benchmark_batch_sizes: str = setting("1,16,64", "batch sizes `benchmark` also reports (latency, throughput)")

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        check_precision("nvidia", self.precision, PRECISIONS, "int8 (TensorRT explicit quantization) is not built yet")
        if self.engine == "ort-cuda" and self.precision == "fp16":
            raise ValueError("precision: fp16 needs engine tensorrt, ort-tensorrt or torch (ort-cuda runs fp32)")
        if not 1 <= self.batch_size <= 4096:
            raise ValueError(f"batch_size: must be 1..4096, got {self.batch_size}")
        if self.device_index < 0:
            raise ValueError(f"device_index: must be >= 0, got {self.device_index}")
        if self.workspace_mib < 16:
            raise ValueError(f"workspace_mib: must be at least 16, got {self.workspace_mib}")
        parse_batch_sizes(self.benchmark_batch_sizes)


def engine_runtime(engine: str) -> dict[str, str]:
    """``{"runtime", "runtime_version"}`` of one engine; RuntimeMissingError naming what to install."""
    if engine == "tensorrt":
        trt = require_module("nvidia", EXTRA, "tensorrt")
        from ofa_deploy.backends.nvidia.cuda_runtime import cudart

        cudart()
        return {"runtime": "tensorrt", "runtime_version": str(trt.__version__)}
    if engine in ("ort-tensorrt", "ort-cuda"):
        from ofa_deploy.backends.nvidia.cuda_runtime import cudart
        from ofa_deploy.backends.nvidia.ort_engine import CUDA_EP, TENSORRT_EP, onnxruntime_gpu

        ort = onnxruntime_gpu(TENSORRT_EP if engine == "ort-tensorrt" else CUDA_EP)
        cudart()
        return {"runtime": f"onnxruntime-gpu ({engine})", "runtime_version": str(ort.__version__)}
    # Read from the installed metadata, not by importing torch: `devices` must stay fast and torch-free.
    try:
        version = importlib_metadata.version("torch")
    except importlib_metadata.PackageNotFoundError:
        raise missing_runtime("nvidia", EXTRA, "torch") from None
    if "+cpu" in version or "+rocm" in version:
        raise RuntimeMissingError(
            f"backend 'nvidia': torch {version} is not a CUDA build; install a CUDA build of torch, "
            f"or pip install 'ofa-deploy[{EXTRA}]' for TensorRT"
        )
    return {"runtime": "torch (CUDA)", "runtime_version": version}


def resolve_engine(requested: str) -> str:
    """The engine to use: ``requested``, or for ``auto`` the first installed one in order of preference."""
    if requested != "auto":
        engine_runtime(requested)
        return requested
    for engine in PREFERENCE:
        try:
            engine_runtime(engine)
        except RuntimeMissingError:
            continue
        return engine
    raise RuntimeMissingError(
        f"backend 'nvidia' found no GPU engine (TensorRT, onnxruntime-gpu or a CUDA build of torch): "
        f"pip install 'ofa-deploy[{EXTRA}]'"
    )


def dynamic_batch_onnx(graph: Graph) -> bytes:
    """The graph's ONNX with a symbolic batch dimension, so one artifact serves every batch size."""
    from ofa_deploy.graph.onnx_writer import to_onnx

    model = to_onnx(graph)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model.SerializeToString()


class NvidiaBackend(LocalRuntimeBackend):
    """An NVIDIA GPU timed by CUDA events per call on a batch; bundles hold the ONNX and, with TensorRT, the engine."""

    name = "nvidia"
    extra = EXTRA
    description = "NVIDIA GPU: TensorRT, ONNX Runtime (TensorRT/CUDA provider) or torch CUDA; CUDA-event timing"
    artifact_kinds = (TENSORRT_ENGINE, ONNX)
    default_profile = "v100"
    Settings = NvidiaSettings
    settings: NvidiaSettings
    cli_options = (
        CliOption(
            "--engine", "engine", "GPU engine: tensorrt, ort-tensorrt, ort-cuda, torch or auto", metavar="ENGINE"
        ),
        CliOption("--batch-size", "batch_size", "images per inference call (OFA's GPU tables: 64)", int, "N"),
        CliOption("--gpu", "device_index", "CUDA device index", int, metavar="INDEX"),
        CliOption("--cuda-graphs", "cuda_graphs", "replay runs as CUDA graphs: yes or no", _yes_no, "yes|no"),
    )

    def __init__(self, timing: TimingOptions | None = None, settings_source: str | None = None, **settings: Any):
        super().__init__(timing, settings_source, **settings)
        self._gpu: GpuInfo | None = None
        self._engine: str | None = None
        self._first_conditions: dict[str, Any] | None = None

    # ------------------------------------------------------------------ availability
    @property
    def gpu(self) -> GpuInfo:
        """The GPU in use; TargetUnavailableError naming what is missing (driver, device)."""
        if self._gpu is None:
            self._gpu = select_gpu(self.settings.device_index)
        return self._gpu

    @property
    def engine(self) -> str:
        if self._engine is None:
            self._engine = resolve_engine(self.settings.engine)
        return self._engine

    def diagnose(self) -> list[Finding]:
        """Driver and GPU, every engine, clocks (backends/nvidia/doctor.py)."""
        from ofa_deploy.backends.nvidia import doctor

        return doctor.diagnose(self, PREFERENCE, engine_runtime, EXTRA)

    def runtime_info(self) -> dict[str, str]:
        self.gpu  # noqa: B018 (the hardware first: without a GPU no package helps)
        return {**engine_runtime(self.engine), "engine": self.engine}

    def check(self) -> dict[str, Any]:
        info = self.runtime_info()
        conditions = nvidia_conditions.read_conditions(self.gpu.index)  # a snapshot only: the GPU may be idle now
        details = {
            "gpu": self.gpu.name,
            "compute_capability": self.gpu.compute_capability,
            "gpu_memory_mib": self.gpu.memory_mib,
            "driver_version": conditions.get("driver_version"),
            "driver_cuda_version": self.gpu.driver_cuda_version,
            "engine": self.engine,
            "precision": self.settings.precision,
            "batch_size": self.settings.batch_size,
            "cuda_graphs": self.settings.cuda_graphs,
            "conditions": conditions,
        }
        if self.engine == "tensorrt":
            details["tensorrt_version"] = info["runtime_version"]
        return {**info, "threads": self.timing.threads, "target": self.description, "details": details}

    @classmethod
    def attached_targets(cls) -> list[Target]:
        """The GPUs the driver lists; ``id`` is what ``--gpu`` takes."""
        details = [
            {
                "device": f"cuda:{g.index}",
                "name": g.name,
                "compute_capability": g.compute_capability,
                "memory_mib": g.memory_mib,
                "driver_cuda": g.driver_cuda_version,
            }
            for g in list_gpus()
        ]
        return [Target(str(d["device"]).removeprefix("cuda:"), details=d) for d in details]

    @classmethod
    def status(cls) -> BackendStatus:
        """As for every backend, plus the GPUs present even when no engine is installed."""
        status = super().status()
        if not status.targets:
            with contextlib.suppress(OFADeployError):
                status.targets = [target.to_dict() for target in cls.attached_targets()]
        return status

    def conditions(self) -> dict[str, Any]:
        """NVML snapshot of the GPU now; after the first, also how far the clocks moved since it
        (a warning is logged past 5%). Profiling takes the first once the GPU is warm (after the
        reference and the call overhead were timed), so an idle GPU's low clocks are not compared."""
        now = nvidia_conditions.read_conditions(self.gpu.index)
        if self._first_conditions is None:
            self._first_conditions = now
            return now
        record = nvidia_conditions.compare(self._first_conditions, now)
        return {
            **now,
            "clock_change": record["clock_change"],
            **({"warning": record["warning"]} if "warning" in record else {}),
        }

    # ------------------------------------------------------------------ measuring
    def _cache(self) -> EngineCache:
        from ofa_deploy.backends.nvidia.tensorrt_engine import tensorrt_version

        directory = Path(self.settings.engine_cache).expanduser() if self.settings.engine_cache else default_cache_dir()
        return EngineCache(directory, tensorrt_version(), self.gpu.cache_tag)

    def _runner(self, graph: Graph, onnx: bytes | None = None, batch_shapes=None):
        """A TimedRunner of ``graph`` (already at its batch size) on the chosen engine."""
        engine, gpu, s = self.engine, self.gpu, self.settings
        if engine == "torch":
            from ofa_deploy.backends.nvidia.torch_engine import TorchCudaRunner

            return TorchCudaRunner(graph, gpu.index, s.precision, s.cuda_graphs)
        if onnx is None:
            from ofa_deploy.graph.onnx_writer import to_onnx_bytes

            onnx = to_onnx_bytes(graph)
        if engine == "tensorrt":
            from ofa_deploy.backends.nvidia.tensorrt_engine import BuildOptions, TensorRTRunner, build_engine

            built = build_engine(onnx, BuildOptions(s.precision, s.workspace_mib, batch_shapes), self._cache())
            return TensorRTRunner(built, graph.input_shape, gpu.index, s.cuda_graphs)
        from ofa_deploy.backends.nvidia.ort_engine import OrtGpuRunner

        cache = Path(s.engine_cache).expanduser() if s.engine_cache else default_cache_dir()
        return OrtGpuRunner(
            onnx, engine, graph.input_shape, graph.output_shape, gpu.index, s.precision, cache, s.cuda_graphs
        )

    def load(self, graph: Graph):
        return self._runner(with_batch(graph, self.settings.batch_size))

    def time_graphs(self, graphs: Sequence[Graph], reference: Reference | None) -> list[GpuLatencyStats]:
        """One engine at a time, timed with CUDA events (engines hold GPU memory; not interleaved)."""
        return [self._time(graph, reference) for graph in graphs]

    def _time(self, graph: Graph, reference: Reference | None) -> GpuLatencyStats:
        runners = [self.load(graph) for _ in range(self.timing.instances)]
        try:
            return time_gpu(runners, self.timing, reference, self.settings.batch_size)
        finally:
            for runner in runners:
                getattr(runner, "close", lambda: None)()

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        run = self.load(build_graph([OpSpec.from_key(key)]))
        if baseline_ms is None:
            t = self.timing
            baseline_ms = time_gpu(run, TimingOptions(t.threads, t.warmup, max(t.rounds, 9), t.runs)).raw_estimate
        return Reference(key, run, baseline_ms)

    # ------------------------------------------------------------------ artifacts
    @property
    def verify_tolerance(self) -> float:
        """Largest logit difference from torch (CPU, fp32) a compiled artifact may show: GPU kernels
        sum in another order (fp32: ~1e-5 relative), fp16 keeps 11 bits of mantissa."""
        return FP16_TOLERANCE if self.settings.precision == "fp16" else FP32_TOLERANCE

    def _batch_sizes(self) -> list[int]:
        sizes = {self.settings.batch_size, *parse_batch_sizes(self.settings.benchmark_batch_sizes)}
        return sorted(sizes)

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        onnx = dynamic_batch_onnx(graph)
        (directory / ONNX_FILE).write_bytes(onnx)
        batch = self.settings.batch_size
        input_shape = [batch, *graph.input_shape[1:]]
        output_shape = [batch, *graph.output_shape[1:]]
        details: dict[str, Any] = {
            "engine": self.engine,
            "precision": self.settings.precision,
            "batch_size": batch,
            "dynamic_batch": True,
            "gpu": self.gpu.name,
            "compute_capability": self.gpu.compute_capability,
        }
        if self.engine != "tensorrt":
            return Artifact(ONNX, [ONNX_FILE], "input", input_shape, "NCHW", "output", output_shape, details)
        from ofa_deploy.backends.nvidia.tensorrt_engine import BuildOptions, build_engine, tensorrt_version

        largest = max(self._batch_sizes())
        shape = graph.input_shape[1:]
        shapes = ((1, *shape), (batch, *shape), (largest, *shape))
        engine = build_engine(
            onnx, BuildOptions(self.settings.precision, self.settings.workspace_mib, shapes), self._cache()
        )
        (directory / ENGINE_FILE).write_bytes(engine)
        details.update({"tensorrt_version": tensorrt_version(), "engine_file": ENGINE_FILE, "max_batch_size": largest})
        return Artifact(
            TENSORRT_ENGINE, [ENGINE_FILE, ONNX_FILE], "input", input_shape, "NCHW", "output", output_shape, details
        )

    def _artifact_runner(self, directory: Path, artifact: Artifact, batch: int):
        shape = (batch, *artifact.input_shape[1:])
        if artifact.kind == TENSORRT_ENGINE:
            from ofa_deploy.backends.nvidia.tensorrt_engine import TensorRTRunner, tensorrt_version

            needed, installed = artifact.details.get("tensorrt_version"), tensorrt_version()
            if needed != installed:
                raise TargetUnavailableError(
                    f"{directory}: the bundle's engine needs TensorRT {needed}, this machine has {installed}: "
                    f"pip install tensorrt=={needed}, or compile the sub-network again here"
                )
            built_for = artifact.details.get("compute_capability")
            if built_for != self.gpu.compute_capability:
                raise TargetUnavailableError(
                    f"{directory}: the bundle's engine was built for compute capability {built_for}, "
                    f"this GPU ({self.gpu.name}) is {self.gpu.compute_capability}: compile the sub-network again here"
                )
            if batch > artifact.details.get("max_batch_size", batch):
                raise BadInputError(
                    f"{directory}: the engine accepts batches up to {artifact.details['max_batch_size']}"
                )
            engine = (Path(directory) / artifact.main).read_bytes()
            return TensorRTRunner(engine, shape, self.gpu.index, self.settings.cuda_graphs)
        onnx = (Path(directory) / ONNX_FILE).read_bytes()
        graph_shape = Graph("input", shape, "output", (batch, *artifact.output_shape[1:]))
        if self.engine == "torch":
            raise OFADeployError(
                "engine 'torch' cannot run an ONNX artifact; benchmark with --engine tensorrt, ort-tensorrt or ort-cuda"
            )
        largest = max(self._batch_sizes())
        shapes = ((1, *shape[1:]), (batch, *shape[1:]), (max(largest, batch), *shape[1:]))
        return self._runner(graph_shape, onnx=onnx, batch_shapes=shapes)

    def load_artifact(self, directory: Path, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray] | None:
        if artifact.kind == ONNX and self.engine == "torch":
            return None  # nothing to compare: torch runs the graph itself, not the ONNX
        runner = self._artifact_runner(directory, artifact, 1)
        return runner.run

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> GpuLatencyStats:
        """The artifact at the settings' batch size (same protocol as the LUT, with the reference), then
        each other batch size of ``benchmark_batch_sizes`` (latency, throughput), with the conditions."""
        main = self._time_artifact(directory, artifact, self.settings.batch_size, reference, record_conditions=True)
        for batch in self._batch_sizes():
            if batch != self.settings.batch_size:
                main.other_batch_sizes.append(batch_row(self._time_artifact(directory, artifact, batch, None)))
        main.conditions = nvidia_conditions.compare(main.conditions, nvidia_conditions.read_conditions(self.gpu.index))
        return main

    def _time_artifact(
        self,
        directory: Path,
        artifact: Artifact,
        batch: int,
        reference: Reference | None,
        record_conditions: bool = False,
    ) -> GpuLatencyStats:
        """Time the artifact at ``batch``; with ``record_conditions``, ``conditions`` holds the NVML
        snapshot taken once the GPU is warm (after the warm-up runs, before the timed rounds)."""
        runners = [self._artifact_runner(directory, artifact, batch) for _ in range(self.timing.instances)]
        try:
            for runner in runners:
                runner.timed(max(1, self.timing.warmup))
            warm = nvidia_conditions.read_conditions(self.gpu.index) if record_conditions else None
            stats = time_gpu(runners, self.timing, reference, batch)
            stats.conditions = warm
            return stats
        finally:
            for runner in runners:
                getattr(runner, "close", lambda: None)()
