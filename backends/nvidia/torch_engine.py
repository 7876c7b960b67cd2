"""The torch CUDA engine: the graph as a torch module, timed with CUDA events, optionally as a CUDA graph.

The last engine in the order of preference (TensorRT, ONNX Runtime, torch): it needs only a CUDA
build of torch. The module executes the toolkit's graph IR node by node with the same operators
the ONNX writer emits (so a torch CPU run and ONNX Runtime agree, which the tests check on CPU).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ofa_deploy.errors import TargetUnavailableError
from ofa_deploy.graph.ir import Add, Conv, GlobalAvgPool, Graph, Linear, SqueezeExcite


def graph_module(graph: Graph):
    """A ``torch.nn.Module`` computing ``graph`` (weights as buffers, so ``.to()`` and ``.half()`` move them)."""
    import torch
    import torch.nn.functional as F

    class GraphModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[tuple[Any, ...]] = []
            for i, node in enumerate(graph.nodes):
                names = []
                for tag, array in _arrays(node):
                    name = f"n{i}_{tag}"
                    self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
                    names.append(name)
                self.steps.append((node, names))

        def forward(self, x):
            values = {graph.input_name: x}
            for node, names in self.steps:
                w = [getattr(self, n) for n in names]
                if isinstance(node, Conv):
                    y = F.conv2d(
                        values[node.input],
                        w[0],
                        w[1] if node.bias is not None else None,
                        stride=node.stride,
                        padding=node.kernel_size // 2,
                        groups=node.groups,
                    )
                    if node.act == "relu":
                        y = F.relu(y)
                    elif node.act == "h_swish":
                        y = F.hardswish(y)
                    values[node.output] = y
                elif isinstance(node, SqueezeExcite):
                    x_in = values[node.input]
                    s = F.relu(F.conv2d(x_in.mean((2, 3), keepdim=True), w[0], w[1]))
                    values[node.output] = x_in * F.hardsigmoid(F.conv2d(s, w[2], w[3]))
                elif isinstance(node, Add):
                    values[node.output] = values[node.a] + values[node.b]
                elif isinstance(node, GlobalAvgPool):
                    values[node.output] = values[node.input].mean((2, 3), keepdim=True)
                elif isinstance(node, Linear):
                    values[node.output] = F.linear(values[node.input].flatten(1), w[0], w[1])
                else:
                    raise TypeError(f"unknown node {type(node).__name__}")
            return values[graph.output_name]

    return GraphModule().eval()


def _arrays(node: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(node, Conv):
        return [("w", node.weight)] + ([("b", node.bias)] if node.bias is not None else [])
    if isinstance(node, SqueezeExcite):
        return [
            ("rw", node.reduce_weight),
            ("rb", node.reduce_bias),
            ("ew", node.expand_weight),
            ("eb", node.expand_bias),
        ]
    if isinstance(node, Linear):
        return [("w", node.weight), ("b", node.bias)]
    return []


class TorchCudaRunner:
    """``graph`` on GPU ``device_index`` in fp32 or fp16; ``timed(n)`` records CUDA events on its stream."""

    def __init__(self, graph: Graph, device_index: int, precision: str, cuda_graph: bool) -> None:
        import torch

        if not torch.cuda.is_available():
            raise TargetUnavailableError(
                f"backend 'nvidia': torch {torch.__version__} sees no CUDA device (CPU-only build, or a driver too old "
                f"for CUDA {torch.version.cuda}); choose --engine tensorrt or install a matching torch"
            )
        self.torch = torch
        self.device = torch.device("cuda", device_index)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        self.dtype = dtype
        self.module = graph_module(graph).to(self.device, dtype)
        generator = torch.Generator().manual_seed(0)
        self.input = torch.randn(graph.input_shape, generator=generator).to(self.device, dtype)
        self.stream = torch.cuda.Stream(self.device)
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        self.graph = None
        with self._mode(), torch.cuda.stream(self.stream):
            for _ in range(3):  # warm-up before capture, as CUDA graph capture requires
                self.output = self.module(self.input)
            self.stream.synchronize()
            if cuda_graph:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, stream=self.stream):
                    self.output = self.module(self.input)

    def _mode(self):
        """Inference, cuDNN autotuning (the fastest algorithm per shape, as TensorRT picks tactics), and
        true fp32 in fp32 (no TF32, which torch allows for convolutions on Ampere and later)."""
        torch = self.torch
        cudnn = torch.backends.cudnn.flags(
            enabled=True, benchmark=True, deterministic=False, allow_tf32=self.dtype != torch.float32
        )
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(cudnn)
        return stack

    def _launch(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.output = self.module(self.input)

    def timed(self, n: int) -> list[float]:
        torch = self.torch
        times = []
        with self._mode(), torch.cuda.stream(self.stream):
            for _ in range(n):
                self.start.record(self.stream)
                self._launch()
                self.end.record(self.stream)
                self.end.synchronize()
                times.append(float(self.start.elapsed_time(self.end)))
        return times

    def __call__(self) -> None:
        self.timed(1)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for one input (any batch), for verification against torch on the CPU."""
        torch = self.torch
        with self._mode():
            y = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype))
        return y.float().cpu().numpy()
