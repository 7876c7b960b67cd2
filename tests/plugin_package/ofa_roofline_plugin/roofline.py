"""``roofline``: an analytical backend, a roofline cost model over ofa-deploy's graph IR.

The model
---------
Tensors are float32 (4 bytes an element) in NCHW; shapes are inferred through the graph from its
input shape. For each layer, in graph order:

* ``FLOPs`` (a multiply-add counts 2):

  - Conv (k x k, ``groups``, Cin -> Cout, stride s, "same" padding): ``2 N Cout Ho Wo (Cin/groups) k^2``,
    plus one per output element for the bias and one for the activation, when present;
  - SqueezeExcite (C channels, S squeezed): ``C H W`` (mean) + ``4 C S`` (two 1x1 layers) + ``C H W`` (scale);
  - Add: one per element; GlobalAvgPool: one per input element; Linear: ``2 in out`` + ``out``.

* ``bytes`` moved: every input tensor read once, every weight and bias read once, the output written once
  (SqueezeExcite reads its input twice: once for the mean, once for the scale).

* ``time_us = max(FLOPs / peak, bytes / bandwidth) + layer_overhead_us`` with ``peak`` in FLOP/us
  (``peak_gflops * 1e3``) and ``bandwidth`` in bytes/us (``bandwidth_gbs * 1e3``): a layer is
  compute-bound when its arithmetic intensity (FLOPs per byte) exceeds ``peak / bandwidth``, else
  memory-bound.

A whole graph costs the sum of its layers plus ``invocation_overhead_us`` (once per call), in ms.

Because the model is additive, a latency table profiled with it predicts whole networks exactly:
each operator's entry is its layers' sum (the invocation overhead, see :meth:`invocation_overhead_ms`,
is taken out of each operator and added back once per network).

Only public toolkit modules are imported: ``ofa_deploy.backend.*`` and ``ofa_deploy.graph.ir``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.backend.artifact import COST_REPORT, Artifact
from ofa_deploy.backend.interface import AnalyticalBackend, CliOption
from ofa_deploy.backend.settings import BackendSettings, setting
from ofa_deploy.backend.timing import LatencyEstimate, Reference
from ofa_deploy.graph.ir import Add, Conv, GlobalAvgPool, Graph, Linear, SqueezeExcite
from ofa_roofline_plugin import __version__

BYTES_PER_ELEMENT = 4  # float32 activations and weights
REPORT_FILE = "cost_report.json"
REPORT_FORMAT = "ofa-roofline-cost-report/1"


@dataclass(frozen=True)
class RooflineSettings(BackendSettings):
    peak_gflops: float = setting(50.0, "peak arithmetic throughput of the modelled target, GFLOP/s")
    bandwidth_gbs: float = setting(10.0, "memory bandwidth of the modelled target, GB/s")
    layer_overhead_us: float = setting(5.0, "fixed cost of launching one layer, microseconds")
    invocation_overhead_us: float = setting(50.0, "fixed cost of one inference call, microseconds")

    def validate(self) -> None:
        for name in ("peak_gflops", "bandwidth_gbs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("layer_overhead_us", "invocation_overhead_us"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be zero or positive, got {getattr(self, name)}")


@dataclass
class LayerCost:
    """The model's figures for one layer."""

    name: str  # the layer's output tensor
    op: str  # Conv, SqueezeExcite, Add, GlobalAvgPool, Linear
    output_shape: list[int]
    flops: float
    bytes: float
    compute_us: float
    memory_us: float
    bound: str  # "compute" or "memory"
    us: float  # max(compute_us, memory_us) + the layer overhead


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _layer_work(node: Any, shapes: dict[str, tuple[int, ...]]) -> tuple[tuple[int, ...], float, float]:
    """(output shape, FLOPs, bytes moved) of one node, given the shapes of the tensors so far."""
    if isinstance(node, Conv):
        n, _, h, w = shapes[node.input]
        c_out, c_in_per_group, k, _ = node.weight.shape
        s = node.stride
        out = (n, int(c_out), (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1)
        elements = _numel(out)
        flops = 2.0 * elements * c_in_per_group * k * k
        flops += elements * ((node.bias is not None) + (node.act is not None))
        weights = node.weight.size + (0 if node.bias is None else node.bias.size)
        moved = _numel(shapes[node.input]) + weights + elements
        return out, flops, BYTES_PER_ELEMENT * moved
    if isinstance(node, SqueezeExcite):
        shape = shapes[node.input]
        n, c, h, w = shape
        squeezed = node.reduce_weight.shape[0]
        flops = 2.0 * n * c * h * w + 4.0 * n * c * squeezed
        weights = node.reduce_weight.size + node.reduce_bias.size + node.expand_weight.size + node.expand_bias.size
        moved = 3 * _numel(shape) + weights
        return shape, flops, BYTES_PER_ELEMENT * moved
    if isinstance(node, Add):
        shape = shapes[node.a]
        return shape, float(_numel(shape)), BYTES_PER_ELEMENT * 3.0 * _numel(shape)
    if isinstance(node, GlobalAvgPool):
        shape = shapes[node.input]
        out = (shape[0], shape[1], 1, 1)
        return out, float(_numel(shape)), BYTES_PER_ELEMENT * float(_numel(shape) + _numel(out))
    if isinstance(node, Linear):
        n = shapes[node.input][0]
        features_out, features_in = node.weight.shape
        out = (n, int(features_out))
        flops = 2.0 * n * features_in * features_out + n * features_out
        moved = n * features_in + node.weight.size + node.bias.size + n * features_out
        return out, flops, BYTES_PER_ELEMENT * float(moved)
    raise TypeError(f"the roofline model does not know the graph node {type(node).__name__}")


def layer_costs(graph: Graph, settings: RooflineSettings) -> list[LayerCost]:
    """Every layer of ``graph`` through the roofline model (see the module documentation)."""
    shapes: dict[str, tuple[int, ...]] = {graph.input_name: tuple(int(d) for d in graph.input_shape)}
    flop_per_us = settings.peak_gflops * 1e3
    byte_per_us = settings.bandwidth_gbs * 1e3
    costs = []
    for node in graph.nodes:
        out, flops, moved = _layer_work(node, shapes)
        shapes[node.output] = out
        compute_us, memory_us = flops / flop_per_us, moved / byte_per_us
        costs.append(
            LayerCost(
                name=node.output,
                op=type(node).__name__,
                output_shape=list(out),
                flops=flops,
                bytes=moved,
                compute_us=compute_us,
                memory_us=memory_us,
                bound="compute" if compute_us >= memory_us else "memory",
                us=max(compute_us, memory_us) + settings.layer_overhead_us,
            )
        )
    return costs


def graph_ms(costs: list[LayerCost], settings: RooflineSettings) -> float:
    """A whole call: the layers plus the invocation overhead, in milliseconds."""
    return (sum(c.us for c in costs) + settings.invocation_overhead_us) / 1e3


class RooflineBackend(AnalyticalBackend):
    name = "roofline"
    description = "roofline cost model (peak FLOP/s, memory bandwidth, per-layer and per-call overheads)"
    extra = ""  # pure Python: nothing to install
    artifact_kinds = (COST_REPORT,)
    Settings = RooflineSettings
    settings: RooflineSettings
    cli_options = (
        CliOption(
            "--peak-gflops",
            "peak_gflops",
            "peak arithmetic throughput of the modelled target in GFLOP/s",
            type=float,
            metavar="GFLOPS",
        ),
    )

    def runtime_info(self) -> dict[str, str]:
        return {"runtime": "roofline model", "runtime_version": __version__}

    def estimate(self, graph: Graph) -> float:
        return graph_ms(layer_costs(graph, self.settings), self.settings)

    def invocation_overhead_ms(self) -> float:
        return self.settings.invocation_overhead_us / 1e3

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        """A JSON cost report: the settings, every layer's figures, and the total."""
        costs = layer_costs(graph, self.settings)
        total = graph_ms(costs, self.settings)
        report = {
            "format": REPORT_FORMAT,
            "model": self.model_name,
            "settings": self.settings.to_dict(),
            "input_shape": list(graph.input_shape),
            "output_shape": list(graph.output_shape),
            "layers": [asdict(c) for c in costs],
            "layers_us": sum(c.us for c in costs),
            "invocation_overhead_us": self.settings.invocation_overhead_us,
            "total_ms": total,
            "compute_bound_layers": sum(c.bound == "compute" for c in costs),
        }
        (Path(directory) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return Artifact(
            COST_REPORT,
            [REPORT_FILE],
            graph.input_name,
            list(graph.input_shape),
            "NCHW",
            graph.output_name,
            list(graph.output_shape),
            details={"model": self.model_name, "total_ms": total, "layers": len(costs)},
        )

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyEstimate:
        """The report's total, by the model (and settings) that wrote it: nothing runs, nothing is timed."""
        report = json.loads((Path(directory) / artifact.main).read_text())
        return LatencyEstimate(float(report["total_ms"]), str(report["model"]))
