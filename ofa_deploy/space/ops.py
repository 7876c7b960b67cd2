"""Operators of a sub-network and their latency-table keys, in the official OFA format.

A network is: ``Conv`` (first conv), one ``expanded_conv`` per block (the fixed first block
included), ``Conv_1`` (final expand), ``AvgPool2D``, ``Conv_2`` (feature mix) and ``Logits``.
Shapes in keys are HxWxC; ``expand`` is the absolute middle channel count. The toolkit
enumerates the distinct operators of the whole space once, so profiling never measures a key twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ofa_deploy.space.arch import EXPAND_RATIOS, KERNEL_SIZES, RESOLUTIONS, Arch, check_resolutions
from ofa_deploy.space.geometry import (
    BlockSpec,
    block_spec,
    block_specs,
    final_feature_size,
    first_block_spec,
    stage_slot_shapes,
    stem_output_size,
    widths_for,
)

FIRST_CONV, BLOCK, FINAL_EXPAND, POOL, FEATURE_MIX, LOGITS = (
    "Conv",
    "expanded_conv",
    "Conv_1",
    "AvgPool2D",
    "Conv_2",
    "Logits",
)
OP_KINDS = (FIRST_CONV, BLOCK, FINAL_EXPAND, POOL, FEATURE_MIX, LOGITS)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class OpSpec:
    """One operator: its kind, input/output shapes (HxWxC) and, for blocks, the block's settings."""

    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    mid: int = 0
    kernel: int = 0
    stride: int = 1
    idskip: bool = False
    se: bool = False
    hs: bool = False  # h_swish (else relu) inside the block

    @property
    def key(self) -> str:
        parts = [self.kind, f"input:{_shape(self.input_shape)}", f"output:{_shape(self.output_shape)}"]
        if self.kind == BLOCK:
            parts += [
                f"expand:{self.mid}",
                f"kernel:{self.kernel}",
                f"stride:{self.stride}",
                f"idskip:{int(self.idskip)}",
                f"se:{int(self.se)}",
                f"hs:{int(self.hs)}",
            ]
        return "-".join(parts)

    @property
    def expand_ratio_is_one(self) -> bool:
        return self.kind == BLOCK and self.mid == self.input_shape[2]

    @classmethod
    def from_key(cls, key: str) -> OpSpec:
        """Parse an official key back into a spec (used to re-measure keys of a foreign table)."""
        kind, _, rest = key.partition("-")
        fields = dict(part.split(":", 1) for part in rest.split("-"))

        def dims(text: str) -> tuple[int, ...]:
            return tuple(int(v) for v in text.split("x"))

        spec = cls(kind=kind, input_shape=dims(fields["input"]), output_shape=dims(fields["output"]))
        if kind == BLOCK:
            spec = cls(
                kind=kind,
                input_shape=spec.input_shape,
                output_shape=spec.output_shape,
                mid=int(fields["expand"]),
                kernel=int(fields["kernel"]),
                stride=int(fields["stride"]),
                idskip=fields["idskip"] == "1",
                se=fields["se"] == "1",
                hs=fields["hs"] == "1",
            )
        if spec.key != key:
            raise ValueError(f"not an OFA latency key: {key}")
        return spec


def block_op(spec: BlockSpec) -> OpSpec:
    """The latency-table operator of one block as built."""
    return OpSpec(
        kind=BLOCK,
        input_shape=(spec.in_size, spec.in_size, spec.in_channels),
        output_shape=(spec.out_size, spec.out_size, spec.out_channels),
        mid=spec.mid_channels,
        kernel=spec.kernel_size,
        stride=spec.stride,
        idskip=spec.identity_skip,
        se=spec.use_se,
        hs=spec.act == "h_swish",
    )


def stem_ops(r: int, width_mult: float) -> list[OpSpec]:
    """First conv and the fixed first block."""
    w = widths_for(width_mult)
    size = stem_output_size(r)
    return [
        OpSpec(FIRST_CONV, (r, r, 3), (size, size, w.first_conv)),
        block_op(first_block_spec(size, w)),
    ]


def head_ops(final_size: int, width_mult: float) -> list[OpSpec]:
    """Final expand, pooling, feature mix and classifier."""
    w = widths_for(width_mult)
    last = w.stages[-1]
    return [
        OpSpec(FINAL_EXPAND, (final_size, final_size, last), (final_size, final_size, w.final_expand)),
        OpSpec(POOL, (final_size, final_size, w.final_expand), (1, 1, w.final_expand)),
        OpSpec(FEATURE_MIX, (1, 1, w.final_expand), (1, 1, w.feature_mix)),
        OpSpec(LOGITS, (1, 1, w.feature_mix), (w.n_classes,)),
    ]


def arch_ops(arch: Arch, width_mult: float = 1.0) -> list[OpSpec]:
    """Every operator of ``arch`` in execution order (its latency is the sum of these keys)."""
    specs = block_specs(arch, width_mult)
    ops = stem_ops(arch.r, width_mult)[:1] + [block_op(s) for s in specs]
    return ops + head_ops(specs[-1].out_size, width_mult)


def stage_block_ops(r: int, width_mult: float) -> list[list[list[OpSpec]]]:
    """``table[stage][position][k, e]``: position 0 is the stage's first block, 1 any later block.

    Every block of any arch at resolution ``r`` is one of these, which is what lets the latency of
    a whole population be gathered from a small array.
    """
    return [
        [[block_op(block_spec(shape, -1, k, e)) for k in KERNEL_SIZES for e in EXPAND_RATIOS] for shape in positions]
        for positions in stage_slot_shapes(r, width_mult)
    ]


def resolution_ops(r: int, width_mult: float) -> list[OpSpec]:
    """The distinct operators any sub-network at resolution ``r`` can contain."""
    ops = stem_ops(r, width_mult)
    ops += [op for stage in stage_block_ops(r, width_mult) for position in stage for op in position]
    return ops + head_ops(final_feature_size(r), width_mult)


def space_ops(width_mult: float = 1.0, resolutions: Iterable[int] = RESOLUTIONS) -> list[OpSpec]:
    """The distinct operators of the space at these resolutions, deduplicated by key, in a stable order."""
    seen: dict[str, OpSpec] = {}
    for r in check_resolutions(resolutions):
        for op in resolution_ops(r, width_mult):
            seen.setdefault(op.key, op)
    return list(seen.values())
