"""The ONNX Runtime engines: onnxruntime-gpu with the TensorRT or the CUDA execution provider.

Input and output live on the GPU (I/O binding), so a run is the GPU's work only; the session runs
on our own CUDA stream (``user_compute_stream``) and CUDA events on that stream time each run.
The TensorRT provider caches its engines and timing cache in the same cache directory as the
TensorRT engine; the CUDA provider can replay a run as a CUDA graph (``enable_cuda_graph``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.interface import require_module
from ofa_deploy.backends.nvidia.cuda_runtime import EventTimer
from ofa_deploy.errors import RuntimeMissingError

TENSORRT_EP, CUDA_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider"


def onnxruntime_gpu(provider: str) -> Any:
    """onnxruntime with ``provider`` available (the CPU-only wheel has neither GPU provider)."""
    ort = require_module("nvidia", "nvidia", "onnxruntime", "onnxruntime-gpu")
    if provider not in ort.get_available_providers():
        raise RuntimeMissingError(
            f"backend 'nvidia': onnxruntime {ort.__version__} has no {provider} (the CPU-only wheel is installed): "
            "pip install onnxruntime-gpu, or choose another engine (--engine tensorrt|torch)"
        )
    return ort


def providers(
    engine: str, device_index: int, precision: str, cache_dir: Path, stream_handle: int, cuda_graph: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The provider list for ``engine`` ("ort-tensorrt" or "ort-cuda")."""
    cuda = {
        "device_id": device_index,
        "has_user_compute_stream": "1",
        "user_compute_stream": str(stream_handle),
        "enable_cuda_graph": "1" if cuda_graph else "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "use_tf32": "0",  # true fp32 (the CUDA provider runs fp32 only; see NvidiaSettings.validate)
    }
    if engine == "ort-cuda":
        return [(CUDA_EP, cuda)]
    trt = {
        "device_id": device_index,
        "has_user_compute_stream": "1",
        "user_compute_stream": str(stream_handle),
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir / "ort"),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir / "ort"),
        "trt_cuda_graph_enable": cuda_graph,
    }
    return [(TENSORRT_EP, trt), (CUDA_EP, cuda)]


class OrtGpuRunner:
    """A session on the GPU with its input and output bound to device memory."""

    def __init__(
        self,
        model: bytes | str,
        engine: str,
        input_shape: tuple[int, ...],
        output_shape: tuple[int, ...],
        device_index: int,
        precision: str,
        cache_dir: Path,
        cuda_graph: bool,
    ) -> None:
        ort = onnxruntime_gpu(TENSORRT_EP if engine == "ort-tensorrt" else CUDA_EP)
        self.ort = ort
        self.timer = EventTimer(device_index)
        (cache_dir / "ort").mkdir(parents=True, exist_ok=True)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        chosen = providers(engine, device_index, precision, cache_dir, self.timer.stream_handle, cuda_graph)
        self.session = ort.InferenceSession(model, options, providers=chosen)
        self.device_index = device_index
        x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        self.input = ort.OrtValue.ortvalue_from_numpy(x, "cuda", device_index)
        self.output = ort.OrtValue.ortvalue_from_shape_and_type(list(output_shape), np.float32, "cuda", device_index)
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input("input", self.input)
        self.binding.bind_ortvalue_output("output", self.output)
        self.session.run_with_iobinding(self.binding)  # first run: builds provider engines, captures CUDA graphs

    def _launch(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def timed(self, n: int) -> list[float]:
        return [self.timer.time(self._launch) for _ in range(n)]

    def __call__(self) -> None:
        self.timed(1)

    def run(self, x: np.ndarray) -> np.ndarray:
        self.input.update_inplace(np.ascontiguousarray(x, dtype=np.float32))
        self._launch()
        return self.output.numpy()

    def close(self) -> None:
        self.binding = self.session = self.input = self.output = None  # release the GPU memory first
        self.timer.close()
