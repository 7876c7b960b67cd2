"""The static networks of the official ``net.config`` format.

``MobileNetV3`` is what an extracted OFA sub-network is. ``ProxylessNASNets`` is the other family
among the official specialized networks (GPU/CPU targets); it is built so that all 50 official
configs load, but the toolkit's search space is MobileNetV3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_json
from ofa_deploy.nn.layers import ConvLayer, LinearLayer, ResidualBlock, layer_from_config, set_bn_param
from ofa_deploy.space.arch import EXPAND_RATIOS, KERNEL_SIZES, MAX_DEPTH, N_BLOCKS, N_STAGES, Arch
from ofa_deploy.space.geometry import width_mult_for_first_conv


class MobileNetV3(nn.Module):
    """first_conv -> blocks -> final_expand_layer -> global pool -> feature_mix_layer -> classifier."""

    def __init__(
        self,
        first_conv: ConvLayer,
        blocks: list[ResidualBlock],
        final_expand_layer: ConvLayer,
        feature_mix_layer: ConvLayer,
        classifier: LinearLayer,
    ) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = final_expand_layer
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.final_expand_layer(x)
        x = x.mean((2, 3), keepdim=True)
        x = self.feature_mix_layer(x)
        return self.classifier(torch.flatten(x, 1))

    def set_bn_param(self, momentum: float, eps: float) -> None:
        set_bn_param(self, momentum, eps)

    def bn_param(self) -> dict[str, float]:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                return {"momentum": m.momentum, "eps": m.eps}
        return {"momentum": 0.1, "eps": 1e-5}

    @property
    def config(self) -> dict[str, Any]:
        """The official ``net.config`` dictionary (current official layer names)."""
        return {
            "name": "MobileNetV3",
            "bn": self.bn_param(),
            "first_conv": self.first_conv.config,
            "blocks": [block.config for block in self.blocks],
            "final_expand_layer": self.final_expand_layer.config,
            "feature_mix_layer": self.feature_mix_layer.config,
            "classifier": self.classifier.config,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MobileNetV3:
        if config.get("name", "MobileNetV3") != "MobileNetV3":
            raise BadInputError(f"net config describes a '{config.get('name')}', not a MobileNetV3")
        try:
            net = cls(
                layer_from_config(config["first_conv"]),
                [ResidualBlock.from_config(b) for b in config["blocks"]],
                layer_from_config(config["final_expand_layer"]),
                layer_from_config(config["feature_mix_layer"]),
                layer_from_config(config["classifier"]),
            )
        except KeyError as exc:
            raise BadInputError(f"net config is missing the key {exc}") from None
        bn = config.get("bn") or {"momentum": 0.1, "eps": 1e-5}
        net.set_bn_param(bn["momentum"], bn["eps"])
        return net

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):
        """Accepts the older official names (``.mobile_inverted_conv.``) too."""
        renamed = {k.replace(".mobile_inverted_conv.", ".conv."): v for k, v in state_dict.items()}
        return super().load_state_dict(renamed, strict=strict, assign=assign)


class ProxylessNASNets(nn.Module):
    """first_conv -> blocks -> feature_mix_layer -> global pool -> classifier (official ProxylessNAS)."""

    def __init__(
        self,
        first_conv: ConvLayer,
        blocks: list[ResidualBlock],
        feature_mix_layer: ConvLayer | None,
        classifier: LinearLayer,
    ) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        if self.feature_mix_layer is not None:
            x = self.feature_mix_layer(x)
        return self.classifier(torch.flatten(x.mean((2, 3)), 1))

    set_bn_param = MobileNetV3.set_bn_param
    bn_param = MobileNetV3.bn_param
    load_state_dict = MobileNetV3.load_state_dict

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": "ProxylessNASNets",
            "bn": self.bn_param(),
            "first_conv": self.first_conv.config,
            "blocks": [block.config for block in self.blocks],
            "feature_mix_layer": None if self.feature_mix_layer is None else self.feature_mix_layer.config,
            "classifier": self.classifier.config,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ProxylessNASNets:
        try:
            net = cls(
                layer_from_config(config["first_conv"]),
                [ResidualBlock.from_config(b) for b in config["blocks"]],
                layer_from_config(config.get("feature_mix_layer")),
                layer_from_config(config["classifier"]),
            )
        except KeyError as exc:
            raise BadInputError(f"net config is missing the key {exc}") from None
        bn = config.get("bn") or {"momentum": 0.1, "eps": 1e-3}
        net.set_bn_param(bn["momentum"], bn["eps"])
        return net


NETWORKS = {"MobileNetV3": MobileNetV3, "ProxylessNASNets": ProxylessNASNets}


def load_net_config(path: str | Path) -> dict[str, Any]:
    """Read a ``net.config`` JSON file with a clear error for unreadable or invalid files."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such net config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read net config ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: net config is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise BadInputError(f"{path}: a net config must be a JSON object")
    return config


def build_from_net_config(path_or_config: str | Path | dict[str, Any]) -> MobileNetV3 | ProxylessNASNets:
    """Build the static network an official (or toolkit-written) ``net.config`` describes."""
    config = path_or_config if isinstance(path_or_config, dict) else load_net_config(path_or_config)
    name = config.get("name", "MobileNetV3")
    if name not in NETWORKS:
        raise BadInputError(f"net config describes a '{name}'; supported: {sorted(NETWORKS)}")
    return NETWORKS[name].from_config(config)


def save_net_config(net: MobileNetV3 | ProxylessNASNets, path: str | Path) -> None:
    """Write the network's ``net.config`` (official layout) atomically."""
    atomic_write_json(Path(path), net.config, indent=4)


def arch_of_net_config(config: dict[str, Any], resolution: int) -> tuple[Arch, float]:
    """Recover the OFA arch and width multiplier of a MobileNetV3 ``net.config`` (e.g. an official
    specialized network), so the toolkit can count, predict and compare it."""
    if config.get("name", "MobileNetV3") != "MobileNetV3":
        raise BadInputError(f"only MobileNetV3 configs map to the OFA space, not '{config.get('name')}'")
    width_mult = width_mult_for_first_conv(config["first_conv"]["out_channels"])
    if width_mult is None:
        raise BadInputError("net config's first conv width matches neither w1.0 nor w1.2")
    stages: list[list[dict[str, Any]]] = []
    for block in config["blocks"][1:]:
        conv = block.get("conv", block.get("mobile_inverted_conv"))
        if block.get("shortcut") is None:
            stages.append([])
        stages[-1].append(conv)
    if len(stages) != N_STAGES:
        raise BadInputError(f"net config has {len(stages)} stages; the OFA space has {N_STAGES}")
    ks, e, d = [KERNEL_SIZES[0]] * N_BLOCKS, [EXPAND_RATIOS[0]] * N_BLOCKS, []
    for s, convs in enumerate(stages):
        d.append(len(convs))
        for j, conv in enumerate(convs[:MAX_DEPTH]):
            mid = conv.get("mid_channels") or round(conv["in_channels"] * conv["expand_ratio"])
            ks[s * MAX_DEPTH + j] = conv["kernel_size"]
            e[s * MAX_DEPTH + j] = round(mid / conv["in_channels"])
    return Arch.from_dict({"ks": ks, "e": e, "d": d, "r": resolution}, source="net config"), width_mult
