"""Channel widths, strides and feature-map sizes of OFA MobileNetV3, from an arch alone.

Pure arithmetic shared by the supernet, the analytics, and the latency-table keys, so that all
three agree on what network an arch builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ofa_deploy.space.arch import MAX_DEPTH, N_STAGES, Arch, check_width_mult

CHANNEL_DIVISIBLE = 8
SE_REDUCTION = 4
BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)  # first conv, first block, 5 stages, final, mix
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
FIRST_BLOCK_ACT = "relu"
N_CLASSES = 1000


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE, min_val: int | None = None) -> int:
    """Round to a multiple of ``divisor`` without going down by more than 10% (TF/OFA rule)."""
    if min_val is None:
        min_val = divisor
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def middle_channels(in_channels: int, expand_ratio: float) -> int:
    """Channels inside a block: ``in_channels * expand_ratio``, made divisible by 8."""
    return make_divisible(round(in_channels * expand_ratio))


def se_channels(channels: int) -> int:
    """Channels of the SE bottleneck of a ``channels``-wide block: a quarter, made divisible by 8."""
    return make_divisible(channels // SE_REDUCTION)


def conv_out_size(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv (odd kernel): ceil(size / stride)."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class Widths:
    """Channel counts of the network for one width multiplier."""

    width_mult: float
    first_conv: int
    first_block: int
    stages: tuple[int, ...]
    final_expand: int
    feature_mix: int

    @property
    def n_classes(self) -> int:
        return N_CLASSES


@cache
def widths_for(width_mult: float) -> Widths:
    """Channel counts of the network at ``width_mult``: the base widths scaled and made divisible by 8."""
    w = check_width_mult(width_mult)
    scaled = [make_divisible(b * w) for b in BASE_WIDTHS]
    return Widths(
        width_mult=w,
        first_conv=scaled[0],
        first_block=scaled[1],
        stages=tuple(scaled[2:7]),
        final_expand=scaled[7],
        feature_mix=scaled[8],
    )


def width_mult_for_first_conv(channels: int) -> float | None:
    """Inverse of :func:`widths_for` on the first conv's output channels (how official LUTs say it)."""
    for w in (1.0, 1.2):
        if widths_for(w).first_conv == channels:
            return w
    return None


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block as built: everything a latency key or a FLOP count needs."""

    index: int  # slot 0..19, or -1 for the fixed first block
    in_size: int
    out_size: int
    in_channels: int
    out_channels: int
    mid_channels: int
    kernel_size: int
    stride: int
    act: str
    use_se: bool
    identity_skip: bool
    expand_ratio: int

    @property
    def has_expand_conv(self) -> bool:
        return self.expand_ratio != 1


def first_block_spec(size: int, widths: Widths) -> BlockSpec:
    """The fixed first block (3x3 depthwise, expand ratio 1, ReLU, no SE) at feature-map size ``size``."""
    c = widths.first_block
    return BlockSpec(
        index=-1,
        in_size=size,
        out_size=size,
        in_channels=widths.first_conv,
        out_channels=c,
        mid_channels=widths.first_conv,
        kernel_size=3,
        stride=1,
        act=FIRST_BLOCK_ACT,
        use_se=False,
        identity_skip=widths.first_conv == c,
        expand_ratio=1,
    )


@dataclass(frozen=True)
class SlotShape:
    """Where a block sits: its sizes, channels and stride (everything but its kernel and expand ratio)."""

    stage: int
    in_size: int
    out_size: int
    in_channels: int
    out_channels: int
    stride: int


def stem_output_size(r: int) -> int:
    """Spatial size after the first (stride-2) conv, which the fixed first block keeps."""
    return conv_out_size(r, 2)


@cache
def stage_slot_shapes(r: int, width_mult: float = 1.0) -> tuple[tuple[SlotShape, SlotShape], ...]:
    """Per stage: the shape of its first block (which changes size and channels) and of any later block.

    Every block of every arch at resolution ``r`` has one of these shapes: this is the single place
    that walks the network's strides and widths."""
    widths = widths_for(width_mult)
    size, in_ch = stem_output_size(r), widths.first_block
    shapes = []
    for stage in range(N_STAGES):
        out_ch, stride = widths.stages[stage], STAGE_STRIDES[stage]
        out_size = conv_out_size(size, stride)
        shapes.append(
            (
                SlotShape(stage, size, out_size, in_ch, out_ch, stride),
                SlotShape(stage, out_size, out_size, out_ch, out_ch, 1),
            )
        )
        size, in_ch = out_size, out_ch
    return tuple(shapes)


def block_spec(shape: SlotShape, index: int, kernel_size: int, expand_ratio: int) -> BlockSpec:
    """The block with ``kernel_size`` and ``expand_ratio`` at ``shape`` (slot ``index``)."""
    return BlockSpec(
        index=index,
        in_size=shape.in_size,
        out_size=shape.out_size,
        in_channels=shape.in_channels,
        out_channels=shape.out_channels,
        mid_channels=middle_channels(shape.in_channels, expand_ratio),
        kernel_size=kernel_size,
        stride=shape.stride,
        act=STAGE_ACTS[shape.stage],
        use_se=STAGE_SE[shape.stage],
        identity_skip=shape.stride == 1 and shape.in_channels == shape.out_channels,
        expand_ratio=expand_ratio,
    )


def block_specs(arch: Arch, width_mult: float = 1.0) -> list[BlockSpec]:
    """Every block the arch builds, first block included, in execution order."""
    specs = [first_block_spec(stem_output_size(arch.r), widths_for(width_mult))]
    for stage, (first, later) in enumerate(stage_slot_shapes(arch.r, width_mult)):
        for slot in range(arch.d[stage]):
            b = stage * MAX_DEPTH + slot
            specs.append(block_spec(first if slot == 0 else later, b, arch.ks[b], arch.e[b]))
    return specs


def final_feature_size(r: int) -> int:
    """Spatial size entering the final expand layer (after the stem and all strides)."""
    return stage_slot_shapes(r)[-1][1].out_size
