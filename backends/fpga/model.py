"""An analytical latency model of the Xilinx DPUCZDX8G (Zynq UltraScale+ DPU), per layer.

Facts come from the vendor's documentation (docs/fpga.md lists them with sources); five numbers
the documentation does not give are fitted once on the vendor's published ZCU102 latencies
(``parameters.json``, written by ``benchmarks/bench_fpga.py --fit``, with its provenance).

Per layer, on one core (a batch-1 inference runs on one core):

* **convolution / fully connected** (PE array): ``kh·kw · ⌈Cin/g / ICP⌉ · ⌈Cout/g / OCP⌉ · g ·
  H_out · ⌈W_out / PP⌉`` cycles — the ceilings are the padding waste of channel counts and widths
  that are not multiples of the parallelism; a thin input (fewer channels than ICP, e.g. the
  image) is packed with the kernel's columns into the channel lanes (channel augmentation, our
  reading of PG338): ``kh · ⌈Cin·kw / ICP⌉`` replaces ``kh·kw · ⌈Cin / ICP⌉``;
* **depthwise convolution** (depthwise engine / ALU): ``kh·kw · ⌈C / ICP⌉ · H_out · ⌈W_out / P_dw⌉``
  with ``P_dw = PP/2`` (no output-channel dimension), divided by ``depthwise_efficiency`` (fitted:
  the documentation gives no formula for this engine);
* **pooling, element-wise add and multiply** (misc engine / ALU): the same shape of formula with
  the window as kernel (1×1 for element-wise layers);
* ReLU / ReLU6 / LeakyReLU fuse into the layer before (free); BatchNorm is folded; reshapes cost
  nothing; a concatenation is a copy of its feature maps by the data mover;
* a **memory roofline**: weights + ``feature_map_ddr_fraction`` of the input and output feature
  maps (int8, one byte each; the fraction, fitted, stands for the compiler keeping maps on chip
  between fused layers) against the board's DDR bandwidth times ``ddr_efficiency`` (fitted); a
  layer takes the longer of compute and memory;
* a fixed ``layer_overhead_cycles`` per DPU layer (fitted: instruction fetch, pipeline fill);
* operators the DPU does not run (hard-swish, hard-sigmoid and sigmoid on this DPU family,
  anything unknown) fall back to the ARM CPU: each run of consecutive fall-back layers costs a
  DPU↔CPU switch plus moving its feature maps through DDR plus the CPU's element-wise work
  (``CPU_*`` constants below: assumptions, not fitted — the vendor publishes no such model);
  with ``hard_swish="relu6"`` the user opts into the usual FPGA substitute instead (hard-swish and
  hard-sigmoid replaced by ReLU6-based versions that fuse like ReLU6: a model change that needs
  fine-tuning);
* the whole network: the sum plus ``invocation_overhead_ms`` (fitted: starting the DPU and the
  CPU side of an end-to-end run, as the vendor's figures include it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any

from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.layers import Layer, LayerKind

MODEL_VERSION = "dpuczdx8g-1"

# PG338 "Parallelism for Different Convolution Architectures": pixel, input- and output-channel parallelism.
ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "B512": (4, 8, 8),
    "B800": (4, 10, 10),
    "B1024": (8, 8, 8),
    "B1152": (4, 12, 12),
    "B1600": (8, 10, 10),
    "B2304": (8, 12, 12),
    "B3136": (8, 14, 14),
    "B4096": (8, 16, 16),
}

# CPU fall-back (ARM Cortex-A53 class, one thread): assumptions, documented in docs/fpga.md.
CPU_SWITCH_MS = 0.15  # end a DPU sub-graph, hand the tensor to the CPU, start the next sub-graph
CPU_ELEMENTS_PER_MS = 250_000.0  # de-quantise, apply, re-quantise one element (NEON, one core)

FUSED = (LayerKind.RELU, LayerKind.RELU6, LayerKind.LEAKYRELU)
CPU_ONLY = (LayerKind.HARDSWISH, LayerKind.HARDSIGMOID)  # and SIGMOID: not in DPUCZDX8G's operator list
DPU_ENGINES = {
    LayerKind.CONV: "conv",
    LayerKind.GROUPED: "conv",
    LayerKind.FC: "conv",
    LayerKind.DEPTHWISE: "depthwise",
    LayerKind.MAXPOOL: "misc",
    LayerKind.AVGPOOL: "misc",
    LayerKind.GLOBALPOOL: "misc",
    LayerKind.ADD: "misc",
    LayerKind.MUL: "misc",
}


@dataclass(frozen=True)
class FittedParameters:
    """The model's numbers the documentation does not give, with where they came from."""

    depthwise_efficiency: float
    ddr_efficiency: float
    feature_map_ddr_fraction: float
    layer_overhead_cycles: float
    invocation_overhead_ms: float
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls) -> FittedParameters:
        text = (resources.files("ofa_deploy.backends.fpga") / "parameters.json").read_text()
        data = json.loads(text)
        names = [f.name for f in fields(cls) if f.name != "provenance"]
        return cls(**{k: float(data[k]) for k in names}, provenance=data.get("provenance", {}))

    def values(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "provenance"}


@dataclass(frozen=True)
class DpuConfig:
    """One DPU as deployed: architecture, cores, clock, the board's DDR, and the hard-swish choice."""

    arch: str = "B4096"
    cores: int = 1
    clock_mhz: float = 300.0
    ddr_gbs: float = 17.1  # theoretical peak of the board's DDR (shared by all cores)
    hard_swish: str = "cpu"  # "cpu": fall back to the ARM core; "relu6": the ReLU6-based substitute

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise BadInputError(f"unknown DPU architecture {self.arch!r}; known: {', '.join(ARCHITECTURES)}")
        if self.hard_swish not in ("cpu", "relu6"):
            raise BadInputError(f"hard_swish must be 'cpu' or 'relu6', got {self.hard_swish!r}")

    @property
    def parallelism(self) -> tuple[int, int, int]:
        return ARCHITECTURES[self.arch]

    @property
    def peak_gops(self) -> float:
        pp, icp, ocp = self.parallelism
        return 2 * pp * icp * ocp * self.clock_mhz / 1e3


@dataclass
class LayerCost:
    """One layer's cost on the DPU: the engine that runs it, compute cycles, DDR bytes, ms and what bounds it."""

    name: str
    op: str
    engine: str  # "conv", "depthwise", "misc", "fused", "free", "cpu"
    cycles: int  # DPU compute cycles (0 for fused, free and CPU layers)
    bytes: int  # DDR traffic assumed for the layer
    ms: float
    bound: str  # "compute", "memory", "overhead", "cpu", "none"
    source_op: str = ""


@dataclass
class CostReport:
    """Every layer's cost on one DPU configuration; the latency is their sum plus the invocation overhead."""

    layers: list[LayerCost]
    invocation_ms: float
    config: DpuConfig
    parameters: FittedParameters

    @property
    def latency_ms(self) -> float:
        return sum(layer.ms for layer in self.layers) + self.invocation_ms

    @property
    def ddr_bytes(self) -> int:
        return sum(layer.bytes for layer in self.layers)

    def throughput_fps(self, cores: int | None = None) -> float:
        """Frames per second with one inference thread per core, capped by the shared DDR bandwidth."""
        n = cores or self.config.cores
        compute = n * 1e3 / self.latency_ms
        bandwidth = self.config.ddr_gbs * 1e9 * self.parameters.ddr_efficiency / max(self.ddr_bytes, 1)
        return min(compute, bandwidth)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "invocation_ms": self.invocation_ms,
            "model": MODEL_VERSION,
            "dpu": asdict(self.config),
            "peak_gops": self.config.peak_gops,
            "parameters": self.parameters.values(),
            "cpu_fallback_layers": sum(1 for c in self.layers if c.engine == "cpu"),
            "layers": [asdict(c) for c in self.layers],
        }


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _compute_cycles(layer: Layer, pp: int, icp: int, ocp: int) -> int:
    c_out, h_out, w_out = layer.out_shape
    c_in = layer.in_shape[0]
    kh, kw = layer.kernel
    if layer.op in (LayerKind.CONV, LayerKind.GROUPED, LayerKind.FC):
        g = max(layer.groups, 1)
        c_group = c_in // g
        if c_group < icp and kw > 1:
            # channel augmentation: a thin input (an image's 3 channels) is packed with the kernel's
            # columns into the input-channel lanes instead of leaving most of them idle
            return kh * _ceil(c_group * kw, icp) * _ceil(c_out // g, ocp) * g * h_out * _ceil(w_out, pp)
        return kh * kw * _ceil(c_group, icp) * _ceil(c_out // g, ocp) * g * h_out * _ceil(w_out, pp)
    lanes = max(pp // 2, 1)
    if layer.op in (
        LayerKind.DEPTHWISE,
        LayerKind.MAXPOOL,
        LayerKind.AVGPOOL,
        LayerKind.GLOBALPOOL,
    ):  # a window per channel: no output-channel lanes
        return kh * kw * _ceil(c_out, icp) * h_out * _ceil(w_out, lanes)
    # element-wise (add, mul): one pass over the output per extra input
    return max(layer.inputs - 1, 1) * _ceil(c_out, icp) * h_out * _ceil(w_out, lanes)


def _efficiency(op: str, parameters: FittedParameters) -> float:
    return parameters.depthwise_efficiency if op == LayerKind.DEPTHWISE else 1.0


def estimate_layers(layers: list[Layer], config: DpuConfig, parameters: FittedParameters) -> CostReport:
    """Every layer's cost and the whole network's latency on one DPU core."""
    pp, icp, ocp = config.parallelism
    clock_per_ms = config.clock_mhz * 1e3
    bytes_per_ms = config.ddr_gbs * 1e6 * parameters.ddr_efficiency
    costs: list[LayerCost] = []
    previous_cpu = False
    for layer in layers:
        op = layer.op
        substitute = config.hard_swish == "relu6" and op in CPU_ONLY
        if op in FUSED or substitute:
            costs.append(LayerCost(layer.name, op, "fused", 0, 0, 0.0, "none", layer.source_op))
            previous_cpu = False
            continue
        if op == LayerKind.RESHAPE:
            costs.append(LayerCost(layer.name, op, "free", 0, 0, 0.0, "none", layer.source_op))
            continue
        if op == LayerKind.CONCAT:  # a copy through the data mover: its feature maps, no compute
            traffic = round((layer.in_elements + layer.out_elements) * parameters.feature_map_ddr_fraction)
            ms = traffic / bytes_per_ms + parameters.layer_overhead_cycles / clock_per_ms
            costs.append(LayerCost(layer.name, op, "misc", 0, traffic, ms, "memory", layer.source_op))
            continue
        if op in DPU_ENGINES:
            cycles = _compute_cycles(layer, pp, icp, ocp)
            feature_maps = (layer.in_elements + layer.out_elements) * parameters.feature_map_ddr_fraction
            traffic = round(layer.params + feature_maps)
            compute_ms = cycles / _efficiency(layer.op, parameters) / clock_per_ms
            memory_ms = traffic / bytes_per_ms
            overhead_ms = parameters.layer_overhead_cycles / clock_per_ms
            ms = max(compute_ms, memory_ms) + overhead_ms
            bound = "compute" if compute_ms >= memory_ms else "memory"
            if overhead_ms > max(compute_ms, memory_ms):
                bound = "overhead"
            costs.append(LayerCost(layer.name, op, DPU_ENGINES[op], cycles, traffic, ms, bound, layer.source_op))
            previous_cpu = False
            continue
        # the ARM core: hard-swish / hard-sigmoid / sigmoid and anything the DPU does not know
        elements = layer.in_elements + layer.out_elements
        ms = elements / bytes_per_ms + layer.out_elements / CPU_ELEMENTS_PER_MS
        if not previous_cpu:
            ms += CPU_SWITCH_MS
        costs.append(LayerCost(layer.name, op, "cpu", 0, elements, ms, "cpu", layer.source_op))
        previous_cpu = True
    return CostReport(costs, parameters.invocation_overhead_ms, config, parameters)


def gops(layers: list[Layer]) -> float:
    """Billions of operations (2 per multiply-accumulate), as the vendor's tables count them."""
    return 2 * sum(layer.macs for layer in layers) / 1e9
