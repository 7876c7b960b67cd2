"""The TensorRT engine: build a serialized engine from the toolkit's ONNX (cached), run it on a stream.

TensorRT 10 Python API: ``Builder`` + ``OnnxParser`` -> ``build_serialized_network`` with a
``BuilderConfig`` (workspace pool, FP16 flag, the shared timing cache, an optimization profile for
a dynamic batch), then ``Runtime.deserialize_cuda_engine`` and an ``IExecutionContext`` whose I/O
tensors are bound with ``set_tensor_address`` and run with ``execute_async_v3(stream)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ofa_deploy.backend.interface import require_module
from ofa_deploy.backends.nvidia.cuda_runtime import DeviceBuffer, EventTimer
from ofa_deploy.backends.nvidia.engine_cache import EngineCache
from ofa_deploy.errors import OFADeployError

log = logging.getLogger(__name__)


def tensorrt() -> Any:
    """The ``tensorrt`` module, or RuntimeMissingError naming the ``nvidia`` extra."""
    return require_module("nvidia", "nvidia", "tensorrt")


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


@dataclass(frozen=True)
class BuildOptions:
    """What an engine is built with (all of it goes into the cache key)."""

    precision: str  # "fp32" or "fp16"
    workspace_mib: int
    batch_shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None  # min, opt, max of "input"

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "workspace_mib": self.workspace_mib,
            "batch_shapes": [list(s) for s in self.batch_shapes] if self.batch_shapes else None,
        }


def build_engine(onnx: bytes, options: BuildOptions, cache: EngineCache) -> bytes:
    """The serialized engine for ``onnx`` (from the cache when it was built before)."""
    key = cache.key(onnx, options.to_dict())
    cached = cache.load_engine(key)
    if cached is not None:
        return cached
    trt = tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise OFADeployError(f"TensorRT could not parse the ONNX model: {errors or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib * 2**20)
    if options.precision == "fp32":  # true fp32, as the table says (TensorRT allows TF32 on Ampere+ by default)
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.precision == "fp16":
        if not builder.platform_has_fast_fp16:
            log.warning("warning: this GPU has no fast fp16; TensorRT may fall back to fp32 kernels")
        config.set_flag(trt.BuilderFlag.FP16)
    timing_cache = config.create_timing_cache(cache.load_timing_cache())
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    if options.batch_shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape("input", *options.batch_shapes)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise OFADeployError("TensorRT failed to build an engine (see the TensorRT messages above)")
    cache.store_timing_cache(bytes(memoryview(config.get_timing_cache().serialize())))
    engine = bytes(memoryview(serialized))
    cache.store_engine(key, engine)
    return engine


class TensorRTRunner:
    """A deserialized engine with its buffers bound, for input shape ``input_shape``."""

    def __init__(self, engine: bytes, input_shape: tuple[int, ...], device_index: int, cuda_graph: bool) -> None:
        trt = tensorrt()
        self.timer = EventTimer(device_index)
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise OFADeployError(
                "TensorRT could not load the engine (built by another TensorRT version or for another GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for name in inputs:
            self.context.set_input_shape(name, tuple(input_shape))
        self.buffers: dict[str, tuple[DeviceBuffer, tuple[int, ...], np.dtype]] = {}
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            buffer = DeviceBuffer(max(1, int(np.prod(shape)) * dtype.itemsize))
            self.context.set_tensor_address(name, buffer.address)
            self.buffers[name] = (buffer, shape, dtype)
        self.input_name, self.output_name = inputs[0], next(n for n in names if n not in inputs)
        buffer, shape, dtype = self.buffers[self.input_name]
        buffer.upload(np.random.default_rng(0).standard_normal(shape).astype(dtype))
        if cuda_graph:
            self.timer.capture(self._launch)

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.timer.stream_handle):
            raise OFADeployError("TensorRT failed to enqueue the engine")

    def timed(self, n: int) -> list[float]:
        return [self.timer.time(self._launch) for _ in range(n)]

    def __call__(self) -> None:
        self.timed(1)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for one input of the bound shape (for verification)."""
        buffer, shape, dtype = self.buffers[self.input_name]
        buffer.upload(np.asarray(x, dtype).reshape(shape))
        self._launch()
        self.timer.synchronize()
        out, out_shape, out_dtype = self.buffers[self.output_name]
        return out.download(out_shape, out_dtype).astype(np.float32)

    def close(self) -> None:
        self.timer.close()
        for buffer, _, _ in self.buffers.values():
            buffer.free()
        self.buffers.clear()


def tensorrt_version() -> str:
    """The installed TensorRT's version: part of the engine cache key, and recorded with a bundle's engine."""
    return str(tensorrt().__version__)
