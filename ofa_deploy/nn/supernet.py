"""The OFA MobileNetV3 supernet: elastic depth, kernel size and expand ratio over shared weights.

``OFAMobileNetV3`` has the official module names, so an official checkpoint
(``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2``, 475 keys) loads by name; ``get_active_subnet``
returns a plain static :class:`~ofa_deploy.nn.mobilenet_v3.MobileNetV3` with copied weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofa_deploy.errors import BadInputError, CheckpointMismatchError
from ofa_deploy.nn.dynamic import DynamicMBConvLayer
from ofa_deploy.nn.layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock, set_bn_param
from ofa_deploy.nn.mobilenet_v3 import MobileNetV3
from ofa_deploy.space.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, RESOLUTIONS, Arch, check_width_mult
from ofa_deploy.space.geometry import (
    STAGE_ACTS,
    STAGE_SE,
    first_block_spec,
    stage_slot_shapes,
    widths_for,
)


def _as_list(value: int | Sequence[int] | None, length: int) -> list[int | None]:
    if value is None or isinstance(value, int):
        return [value] * length
    value = list(value)
    if len(value) != length:
        raise BadInputError(f"expected {length} values, got {len(value)}")
    return value


class OFAMobileNetV3(nn.Module):
    """The OFA MobileNetV3 supernet with official module names; set an active arch, then extract it."""

    def __init__(
        self,
        width_mult: float = 1.0,
        ks_list: Sequence[int] = KERNEL_SIZES,
        expand_ratio_list: Sequence[int] = EXPAND_RATIOS,
        depth_list: Sequence[int] = DEPTHS,
        n_classes: int = 1000,
        dropout_rate: float = 0.0,
        bn_param: tuple[float, float] = (0.1, 1e-5),
    ) -> None:
        super().__init__()
        self.width_mult = check_width_mult(width_mult)
        self.ks_list = tuple(sorted(ks_list))
        self.expand_ratio_list = tuple(sorted(expand_ratio_list))
        self.depth_list = tuple(sorted(depth_list))
        widths = widths_for(self.width_mult)
        self.widths = widths

        self.first_conv = ConvLayer(3, widths.first_conv, kernel_size=3, stride=2, act_func="h_swish")
        first = first_block_spec(0, widths)
        blocks: list[ResidualBlock] = [
            ResidualBlock(
                MBConvLayer(first.in_channels, first.out_channels, 3, 1, expand_ratio=1, act_func=first.act),
                IdentityLayer(first.out_channels) if first.identity_skip else None,
            )
        ]
        self.block_group_info: list[list[int]] = []
        max_depth = max(self.depth_list)
        # Channels and strides come from the one geometry (the resolution only sets sizes, unused here).
        for stage, (first_slot, later_slot) in enumerate(stage_slot_shapes(max(RESOLUTIONS), self.width_mult)):
            self.block_group_info.append([len(blocks) + i for i in range(max_depth)])
            for i in range(max_depth):
                shape = first_slot if i == 0 else later_slot
                conv = DynamicMBConvLayer(
                    shape.in_channels,
                    shape.out_channels,
                    self.ks_list,
                    self.expand_ratio_list,
                    shape.stride,
                    STAGE_ACTS[stage],
                    STAGE_SE[stage],
                )
                skip = (
                    IdentityLayer(shape.out_channels)
                    if shape.stride == 1 and shape.in_channels == shape.out_channels
                    else None
                )
                blocks.append(ResidualBlock(conv, skip))
        feature_dim = widths.stages[-1]
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = ConvLayer(feature_dim, widths.final_expand, kernel_size=1, act_func="h_swish")
        self.feature_mix_layer = ConvLayer(
            widths.final_expand, widths.feature_mix, kernel_size=1, bias=False, use_bn=False, act_func="h_swish"
        )
        self.classifier = LinearLayer(widths.feature_mix, n_classes, dropout_rate=dropout_rate)
        self.set_bn_param(*bn_param)
        self.runtime_depth = [len(group) for group in self.block_group_info]

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        x = self.blocks[0](x)
        for stage, group in enumerate(self.block_group_info):
            for idx in group[: self.runtime_depth[stage]]:
                x = self.blocks[idx](x)
        x = self.final_expand_layer(x)
        x = x.mean((2, 3), keepdim=True)
        x = self.feature_mix_layer(x)
        return self.classifier(torch.flatten(x, 1))

    def set_bn_param(self, momentum: float, eps: float) -> None:
        set_bn_param(self, momentum, eps)

    # ------------------------------------------------------------------ active sub-network
    def set_active_subnet(
        self,
        ks: int | Sequence[int] | None = None,
        e: int | Sequence[int] | None = None,
        d: int | Sequence[int] | None = None,
        **_: Any,
    ) -> None:
        """Select a sub-network: per-slot kernel sizes and expand ratios (20 values or one for all),
        per-stage depths (5 or one). ``None`` leaves a setting unchanged; extra keys (``r``, ``wid``)
        are ignored as in the official API."""
        n_slots = len(self.blocks) - 1
        for block, k, ratio in zip(self.blocks[1:], _as_list(ks, n_slots), _as_list(e, n_slots)):
            if k is not None:
                if k not in self.ks_list:
                    raise BadInputError(f"kernel size {k} is not one of {list(self.ks_list)}")
                block.conv.active_kernel_size = k
            if ratio is not None:
                if ratio not in self.expand_ratio_list:
                    raise BadInputError(f"expand ratio {ratio} is not one of {list(self.expand_ratio_list)}")
                block.conv.active_expand_ratio = ratio
        for stage, depth in enumerate(_as_list(d, len(self.block_group_info))):
            if depth is not None:
                if depth not in self.depth_list:
                    raise BadInputError(f"depth {depth} is not one of {list(self.depth_list)}")
                self.runtime_depth[stage] = depth

    def set_active_arch(self, arch: Arch) -> None:
        self.set_active_subnet(ks=arch.ks, e=arch.e, d=arch.d)

    def set_max_net(self) -> None:
        self.set_active_subnet(ks=max(self.ks_list), e=max(self.expand_ratio_list), d=max(self.depth_list))

    def set_min_net(self) -> None:
        self.set_active_subnet(ks=min(self.ks_list), e=min(self.expand_ratio_list), d=min(self.depth_list))

    def active_arch(self, r: int = 224) -> Arch:
        return Arch(
            ks=tuple(b.conv.active_kernel_size for b in self.blocks[1:]),
            e=tuple(b.conv.active_expand_ratio for b in self.blocks[1:]),
            d=tuple(self.runtime_depth),
            r=r,
        )

    @torch.no_grad()
    def get_active_subnet(self) -> MobileNetV3:
        """A static network with the active sub-network's weights copied out (not shared)."""
        blocks = [copy.deepcopy(self.blocks[0])]
        in_channels = self.widths.first_block
        for stage, group in enumerate(self.block_group_info):
            for idx in group[: self.runtime_depth[stage]]:
                block = self.blocks[idx]
                blocks.append(ResidualBlock(block.conv.active_subnet(in_channels), copy.deepcopy(block.shortcut)))
                in_channels = block.conv.out_channels
        net = MobileNetV3(
            copy.deepcopy(self.first_conv),
            blocks,
            copy.deepcopy(self.final_expand_layer),
            copy.deepcopy(self.feature_mix_layer),
            copy.deepcopy(self.classifier),
        )
        bn = next(m for m in self.modules() if isinstance(m, nn.BatchNorm2d))
        net.set_bn_param(bn.momentum, bn.eps)
        return net.train(self.training)

    def get_active_net_config(self) -> dict[str, Any]:
        """The official ``net.config`` of the active sub-network (as the official API offers)."""
        return self.get_active_subnet().config

    def re_organize_middle_weights(self, expand_ratio_stage: int = 0) -> None:
        for block in self.blocks[1:]:
            block.conv.re_organize_middle_weights(expand_ratio_stage)

    # ------------------------------------------------------------------ checkpoints
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load the official layout (or a ``{"state_dict": ...}`` wrapper, or the older
        ``.mobile_inverted_conv.`` names). A mismatch raises :class:`CheckpointMismatchError` naming the
        first missing and unexpected keys."""
        state = normalise_checkpoint(state_dict)
        own = super().state_dict()
        if strict:
            missing = [k for k in own if k not in state]
            unexpected = [k for k in state if k not in own]
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
                if unexpected:
                    parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
                raise CheckpointMismatchError(
                    f"checkpoint does not fit OFAMobileNetV3 w{self.width_mult}: " + "; ".join(parts)
                )
        for key, value in state.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise CheckpointMismatchError(
                    f"checkpoint does not fit OFAMobileNetV3 w{self.width_mult}: '{key}' has shape "
                    f"{tuple(value.shape)}, expected {tuple(own[key].shape)} (wrong width multiplier?)"
                )
        return super().load_state_dict(state, strict=strict, assign=assign)


def normalise_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` and map the older official key names to the current ones."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f"a checkpoint must be a state_dict mapping, got {type(checkpoint).__name__}")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        checkpoint = checkpoint["state_dict"]
    out = {}
    for key, value in checkpoint.items():
        if key.startswith("module."):  # saved from DataParallel
            key = key[len("module.") :]
        out[key.replace(".mobile_inverted_conv.", ".conv.")] = value
    return out


def load_checkpoint_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint file, key names normalised; CheckpointMismatchError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "not a checkpoint"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointMismatchError(f"{path}: not a readable torch checkpoint ({first_line})") from None
    return normalise_checkpoint(data)


def width_mult_of_checkpoint(state: Mapping[str, torch.Tensor]) -> float | None:
    """Infer w1.0 / w1.2 from the first conv's output channels."""
    weight = state.get("first_conv.conv.weight")
    if weight is None:
        return None
    for w in (1.0, 1.2):
        if widths_for(w).first_conv == weight.shape[0]:
            return w
    return None


def load_supernet(path: str | Path, width_mult: float | None = None) -> OFAMobileNetV3:
    """Build the supernet for a checkpoint file (width multiplier inferred unless given)."""
    state = load_checkpoint_file(path)
    w = width_mult if width_mult is not None else width_mult_of_checkpoint(state)
    if w is None:
        raise CheckpointMismatchError(
            f"{path}: cannot tell the width multiplier (no 'first_conv.conv.weight' of 16 or 24 channels); "
            "is this an OFA MobileNetV3 checkpoint?"
        )
    classifier = state.get("classifier.linear.weight")  # a supernet trained on other data has its own classes
    net = OFAMobileNetV3(width_mult=w, n_classes=classifier.shape[0] if classifier is not None else 1000)
    try:
        net.load_state_dict(state)
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f"{path}: {exc}") from None
    return net.eval()
