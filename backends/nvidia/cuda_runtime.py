"""The few CUDA runtime calls the TensorRT and ONNX Runtime engines need, through cuda-python.

Device buffers, a stream, timing events and CUDA graph capture; every call's status is checked
and a failure is one line. cuda-python >= 12.6 names the module ``cuda.bindings.runtime``; older
releases ``cuda.cudart``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ofa_deploy.backend.interface import require_module
from ofa_deploy.errors import OFADeployError


def cudart() -> Any:
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, else ``cuda.cudart``), or RuntimeMissingError."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        runtime = require_module("nvidia", "nvidia", "cuda.cudart", "cuda-python")
    return runtime


def check(result: Any) -> Any:
    """Unwrap cuda-python's ``(status, value...)`` tuple; raise on an error status."""
    rt = cudart()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != rt.cudaError_t.cudaSuccess:
        raise OFADeployError(f"CUDA error: {status} ({rt.cudaGetErrorString(status)[1].decode(errors='replace')})")
    return values[0] if len(values) == 1 else tuple(values) or None


class DeviceBuffer:
    """``nbytes`` of device memory (freed by :meth:`free`)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = check(cudart().cudaMalloc(nbytes))

    @property
    def address(self) -> int:
        return int(self.ptr)

    def upload(self, array: np.ndarray) -> None:
        rt = cudart()
        array = np.ascontiguousarray(array)
        check(rt.cudaMemcpy(self.ptr, array.ctypes.data, array.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def download(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        rt = cudart()
        out = np.empty(shape, dtype)
        check(rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return out

    def free(self) -> None:
        if self.ptr is not None:
            cudart().cudaFree(self.ptr)
            self.ptr = None


class EventTimer:
    """A stream and two events: ``time(launch)`` is the GPU time of what ``launch`` enqueues, in ms.

    With ``capture(launch)`` the launch is recorded once as a CUDA graph and replayed instead
    (one launch for the whole network: what a CUDA-graph deployment pays)."""

    def __init__(self, device_index: int) -> None:
        rt = cudart()
        check(rt.cudaSetDevice(device_index))
        self.stream = check(rt.cudaStreamCreate())
        self.start = check(rt.cudaEventCreate())
        self.end = check(rt.cudaEventCreate())
        self.graph_exec = None

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def capture(self, launch) -> None:
        rt = cudart()
        launch()  # enqueue once first: engines allocate lazily, which a capture cannot do
        check(rt.cudaStreamSynchronize(self.stream))
        check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        launch()
        graph = check(rt.cudaStreamEndCapture(self.stream))
        self.graph_exec = check(rt.cudaGraphInstantiate(graph, 0))

    def time(self, launch) -> float:
        rt = cudart()
        check(rt.cudaEventRecord(self.start, self.stream))
        if self.graph_exec is not None:
            check(rt.cudaGraphLaunch(self.graph_exec, self.stream))
        else:
            launch()
        check(rt.cudaEventRecord(self.end, self.stream))
        check(rt.cudaEventSynchronize(self.end))
        return float(check(rt.cudaEventElapsedTime(self.start, self.end)))

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        """Destroy the graph, events and stream (once; each runner owns one timer)."""
        rt = cudart()
        if self.graph_exec is not None:
            rt.cudaGraphExecDestroy(self.graph_exec)
            self.graph_exec = None
        if self.stream is not None:
            rt.cudaStreamSynchronize(self.stream)
            rt.cudaEventDestroy(self.start)
            rt.cudaEventDestroy(self.end)
            rt.cudaStreamDestroy(self.stream)
            self.stream = None
