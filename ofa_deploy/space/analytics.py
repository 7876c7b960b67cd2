"""FLOPs, parameters and peak activation memory of a sub-network, from its arch alone.

Conventions (the tests check them against forward hooks on the extracted torch network):

* **FLOPs** are multiply-accumulates of every convolution (SE convolutions included) and of the
  classifier: ``H_out * W_out * C_out * C_in / groups * k * k`` and ``in * out``. BatchNorm,
  activations, pooling and additions are not counted (the OFA / MobileNet convention).
* **Parameters** are every learnable weight of the static network (conv, BN affine, SE and
  classifier biases); BN running statistics are buffers and do not count.
* **Peak memory** is the largest number of bytes of float32 activations alive at one layer, batch 1:
  the layer's input and output (conv + BN + activation fused into one layer, the residual add fused
  into the projection conv, SE one layer), plus a block's input while its residual add is pending.
  Weights are not included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from ofa_deploy.space.arch import EXPAND_RATIOS, KERNEL_SIZES, MAX_DEPTH, N_BLOCKS, N_STAGES, Arch
from ofa_deploy.space.geometry import BlockSpec, block_specs, se_channels, stem_output_size, widths_for
from ofa_deploy.space.slot_table import SlotTable

BYTES_PER_ACTIVATION = 4


@dataclass
class LayerStats:
    """One layer's MACs, parameters and activation elements alive at it (``stage`` None for the stem and head)."""

    name: str
    stage: int | None  # None for the stem and head
    macs: int
    params: int
    peak_activations: int  # elements alive at this layer (see module docstring)


@dataclass
class StageSummary:
    """One stage of an arch: depth, block choices (``k5e4``...), output channels and size, MACs and parameters."""

    stage: int
    depth: int
    blocks: list[str]
    out_channels: int
    out_size: int
    macs: int
    params: int


@dataclass
class ArchStats:
    """FLOPs (multiply-accumulates), parameters and peak activation memory of one arch, per layer and per stage."""

    width_mult: float
    resolution: int
    macs: int
    params: int
    peak_memory_bytes: int
    layers: list[LayerStats] = field(default_factory=list)
    stages: list[StageSummary] = field(default_factory=list)

    @property
    def flops_m(self) -> float:
        """Millions of multiply-accumulates (what OFA calls MFLOPs)."""
        return self.macs / 1e6

    def to_dict(self) -> dict:
        out = asdict(self)
        out["flops_m"] = self.flops_m
        out["params_m"] = self.params / 1e6
        out["peak_memory_mb"] = self.peak_memory_bytes / 2**20
        return out


def _conv(c_in: int, c_out: int, k: int, out_size: int, groups: int = 1, bn: bool = True, bias: bool = False):
    macs = out_size * out_size * c_out * (c_in // groups) * k * k
    params = c_out * (c_in // groups) * k * k + (c_out if bias else 0) + (2 * c_out if bn else 0)
    return macs, params


def _block_layers(spec: BlockSpec, stage: int | None) -> list[LayerStats]:
    """Layers of one inverted-residual block."""
    name = "first_block" if spec.index < 0 else f"block{spec.index}"
    skip = spec.in_channels * spec.in_size**2 if spec.identity_skip else 0
    x_in = spec.in_channels * spec.in_size**2
    mid_in = spec.mid_channels * spec.in_size**2
    mid_out = spec.mid_channels * spec.out_size**2
    out = spec.out_channels * spec.out_size**2
    layers = []
    if spec.has_expand_conv:
        macs, params = _conv(spec.in_channels, spec.mid_channels, 1, spec.in_size)
        layers.append(LayerStats(f"{name}.expand", stage, macs, params, x_in + mid_in))
    macs, params = _conv(
        spec.mid_channels, spec.mid_channels, spec.kernel_size, spec.out_size, groups=spec.mid_channels
    )
    # The block input is the depthwise input when there is no expand conv, so it is not counted twice.
    pending = skip if spec.has_expand_conv else 0
    layers.append(LayerStats(f"{name}.depthwise", stage, macs, params, mid_in + mid_out + pending))
    if spec.use_se:
        se = se_channels(spec.mid_channels)
        macs = 2 * spec.mid_channels * se
        params = 2 * spec.mid_channels * se + se + spec.mid_channels
        layers.append(LayerStats(f"{name}.se", stage, macs, params, 2 * mid_out + skip))
    macs, params = _conv(spec.mid_channels, spec.out_channels, 1, spec.out_size)
    layers.append(LayerStats(f"{name}.project", stage, macs, params, mid_out + out + skip))
    return layers


def arch_stats(arch: Arch, width_mult: float = 1.0) -> ArchStats:
    """Count everything for ``arch`` at its resolution and ``width_mult`` (no torch involved)."""
    widths = widths_for(width_mult)
    r = arch.r
    stem_size = stem_output_size(r)
    layers: list[LayerStats] = []
    macs, params = _conv(3, widths.first_conv, 3, stem_size)
    layers.append(LayerStats("first_conv", None, macs, params, 3 * r * r + widths.first_conv * stem_size**2))

    specs = block_specs(arch, width_mult)
    layers += _block_layers(specs[0], None)
    stages: list[StageSummary] = []
    cursor = 1
    for stage in range(N_STAGES):
        stage_specs = specs[cursor : cursor + arch.d[stage]]
        cursor += arch.d[stage]
        stage_layers = [layer for spec in stage_specs for layer in _block_layers(spec, stage)]
        layers += stage_layers
        stages.append(
            StageSummary(
                stage=stage,
                depth=arch.d[stage],
                blocks=[f"k{s.kernel_size}e{s.expand_ratio}" for s in stage_specs],
                out_channels=stage_specs[-1].out_channels,
                out_size=stage_specs[-1].out_size,
                macs=sum(x.macs for x in stage_layers),
                params=sum(x.params for x in stage_layers),
            )
        )

    size, c_last = specs[-1].out_size, specs[-1].out_channels
    macs, params = _conv(c_last, widths.final_expand, 1, size)
    layers.append(LayerStats("final_expand_layer", None, macs, params, (c_last + widths.final_expand) * size**2))
    layers.append(LayerStats("global_avg_pool", None, 0, 0, widths.final_expand * (size**2 + 1)))
    macs, params = _conv(widths.final_expand, widths.feature_mix, 1, 1, bn=False)
    layers.append(LayerStats("feature_mix_layer", None, macs, params, widths.final_expand + widths.feature_mix))
    n_cls = widths.n_classes
    layers.append(
        LayerStats(
            "classifier",
            None,
            widths.feature_mix * n_cls,
            widths.feature_mix * n_cls + n_cls,
            widths.feature_mix + n_cls,
        )
    )
    return ArchStats(
        width_mult=widths.width_mult,
        resolution=r,
        macs=sum(x.macs for x in layers),
        params=sum(x.params for x in layers),
        peak_memory_bytes=max(x.peak_activations for x in layers) * BYTES_PER_ACTIVATION,
        layers=layers,
        stages=stages,
    )


METRICS = ("flops_m", "params_m", "memory_mb")


@lru_cache(maxsize=32)
def metric_tables(width_mult: float, resolutions: tuple[int, ...]) -> dict[str, SlotTable]:
    """FLOPs (M), parameters (M) and peak memory (MiB) as slot tables, for whole populations."""
    res = np.asarray(sorted(resolutions), dtype=np.int64)
    shape = (len(res), N_BLOCKS, len(KERNEL_SIZES), len(EXPAND_RATIOS))
    fixed = {m: np.zeros(len(res)) for m in METRICS}
    slots = {m: np.zeros(shape) for m in METRICS}
    scale = {"flops_m": 1e-6, "params_m": 1e-6, "memory_mb": BYTES_PER_ACTIVATION / 2**20}
    for ri, r in enumerate(res.tolist()):
        for ki, k in enumerate(KERNEL_SIZES):
            for ei, e in enumerate(EXPAND_RATIOS):
                uniform = Arch(ks=(k,) * N_BLOCKS, e=(e,) * N_BLOCKS, d=(MAX_DEPTH,) * N_STAGES, r=r)
                stats = arch_stats(uniform, width_mult)
                for spec in block_specs(uniform, width_mult)[1:]:
                    layers = _block_layers(spec, 0)
                    slots["flops_m"][ri, spec.index, ki, ei] = sum(x.macs for x in layers) * scale["flops_m"]
                    slots["params_m"][ri, spec.index, ki, ei] = sum(x.params for x in layers) * scale["params_m"]
                    slots["memory_mb"][ri, spec.index, ki, ei] = (
                        max(x.peak_activations for x in layers) * scale["memory_mb"]
                    )
        outside = [x for x in stats.layers if x.stage is None]
        fixed["flops_m"][ri] = sum(x.macs for x in outside) * scale["flops_m"]
        fixed["params_m"][ri] = sum(x.params for x in outside) * scale["params_m"]
        fixed["memory_mb"][ri] = max(x.peak_activations for x in outside) * scale["memory_mb"]
    return {m: SlotTable(m, res, fixed[m], slots[m], reduce="max" if m == "memory_mb" else "sum") for m in METRICS}
