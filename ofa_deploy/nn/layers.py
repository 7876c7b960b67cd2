"""Static layers of an extracted sub-network.

Module names follow the official OFA code (``first_conv.conv``, ``blocks.3.conv.depth_conv.se.fc.reduce``,
``classifier.linear`` ...) so official sub-network weights load by name, and each layer reads and
writes the official ``net.config`` layer dictionaries.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ofa_deploy.errors import BadInputError
from ofa_deploy.space.geometry import se_channels


class Hswish(nn.Module):
    """Hard swish, ``x * relu6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class Hsigmoid(nn.Module):
    """Hard sigmoid, ``relu6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "h_swish": Hswish, "h_sigmoid": Hsigmoid}


def build_activation(name: str | None) -> nn.Module | None:
    """The activation a net config names (relu, relu6, h_swish, h_sigmoid); None for None or ``"none"``."""
    if name is None or name == "none":
        return None
    if name not in _ACTIVATIONS:
        raise BadInputError(f"unsupported activation '{name}'; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def set_bn_param(model: nn.Module, momentum: float, eps: float) -> None:
    """Momentum and eps of every BatchNorm in ``model`` (the official ``net.config`` ``bn`` entry)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum, m.eps = momentum, eps


def same_padding(kernel_size: int) -> int:
    """The padding that keeps the size of a stride-1 convolution with this (odd) kernel."""
    return kernel_size // 2


class SEModule(nn.Module):
    """Squeeze-and-excitation with hard sigmoid gating (MobileNetV3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        mid = se_channels(channels)
        self.fc = nn.Sequential(
            OrderedDict(
                [
                    ("reduce", nn.Conv2d(channels, mid, 1, bias=True)),
                    ("relu", nn.ReLU()),
                    ("expand", nn.Conv2d(mid, channels, 1, bias=True)),
                    ("h_sigmoid", Hsigmoid()),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class _InOrder(nn.Module):
    """Runs its sub-modules in registration order (the official layers' weight -> bn -> act)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._modules.values():
            x = module(x)
        return x


class ConvLayer(_InOrder):
    """conv -> [bn] -> [act], the official ``ConvLayer`` with ops order weight_bn_act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
        use_bn: bool = True,
        act_func: str | None = "relu",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.bias = kernel_size, stride, bias
        self.use_bn, self.act_func = use_bn, act_func
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, same_padding(kernel_size), bias=bias)
        if use_bn:
            self.bn = nn.BatchNorm2d(out_channels)
        act = build_activation(act_func)
        if act is not None:
            self.act = act

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": "ConvLayer",
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "dilation": 1,
            "groups": 1,
            "bias": self.bias,
            "has_shuffle": False,
            "use_se": False,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "use_bn": self.use_bn,
            "act_func": self.act_func,
            "dropout_rate": 0,
            "ops_order": "weight_bn_act",
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ConvLayer:
        _require_plain(config, {"dilation": 1, "groups": 1, "has_shuffle": False, "use_se": False})
        return cls(
            config["in_channels"],
            config["out_channels"],
            kernel_size=config.get("kernel_size", 3),
            stride=config.get("stride", 1),
            bias=config.get("bias", False),
            use_bn=config.get("use_bn", True),
            act_func=config.get("act_func", "relu"),
        )


class LinearLayer(_InOrder):
    """[dropout] -> linear, the official ``LinearLayer``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dropout_rate: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias, self.dropout_rate = bias, dropout_rate
        if dropout_rate > 0:
            self.dropout = nn.Dropout(dropout_rate)
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": "LinearLayer",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "use_bn": False,
            "act_func": None,
            "dropout_rate": self.dropout_rate,
            "ops_order": "weight_bn_act",
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LinearLayer:
        _require_plain(config, {"use_bn": False, "act_func": None})
        return cls(
            config["in_features"],
            config["out_features"],
            bias=config.get("bias", True),
            dropout_rate=config.get("dropout_rate", 0.0),
        )


class IdentityLayer(nn.Module):
    """The identity shortcut of a residual block (official ``IdentityLayer``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": "IdentityLayer",
            "in_channels": [self.channels],
            "out_channels": [self.channels],
            "use_bn": False,
            "act_func": None,
            "dropout_rate": 0,
            "ops_order": "weight_bn_act",
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> IdentityLayer:
        channels = config["in_channels"]
        return cls(channels[0] if isinstance(channels, list) else channels)


class MBConvLayer(nn.Module):
    """Inverted bottleneck: [1x1 expand] -> kxk depthwise [-> SE] -> 1x1 project (no activation)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        expand_ratio: float = 6,
        mid_channels: int | None = None,
        act_func: str = "relu6",
        use_se: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.expand_ratio = kernel_size, stride, expand_ratio
        self.mid_channels, self.act_func, self.use_se = mid_channels, act_func, use_se
        feature_dim = round(in_channels * expand_ratio) if mid_channels is None else mid_channels

        if expand_ratio == 1:
            self.inverted_bottleneck = None
        else:
            self.inverted_bottleneck = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", nn.Conv2d(in_channels, feature_dim, 1, bias=False)),
                        ("bn", nn.BatchNorm2d(feature_dim)),
                        ("act", build_activation(act_func)),
                    ]
                )
            )
        depth_modules: list[tuple[str, nn.Module]] = [
            (
                "conv",
                nn.Conv2d(
                    feature_dim,
                    feature_dim,
                    kernel_size,
                    stride,
                    same_padding(kernel_size),
                    groups=feature_dim,
                    bias=False,
                ),
            ),
            ("bn", nn.BatchNorm2d(feature_dim)),
            ("act", build_activation(act_func)),
        ]
        if use_se:
            depth_modules.append(("se", SEModule(feature_dim)))
        self.depth_conv = nn.Sequential(OrderedDict(depth_modules))
        self.point_linear = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(feature_dim, out_channels, 1, bias=False)),
                    ("bn", nn.BatchNorm2d(out_channels)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": "MBConvLayer",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "expand_ratio": self.expand_ratio,
            "mid_channels": self.mid_channels,
            "act_func": self.act_func,
            "use_se": self.use_se,
            "groups": None,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MBConvLayer:
        if config.get("groups") not in (None, 1):
            raise BadInputError(f"grouped MBConv layers are not part of the OFA space: {config}")
        return cls(
            config["in_channels"],
            config["out_channels"],
            kernel_size=config.get("kernel_size", 3),
            stride=config.get("stride", 1),
            expand_ratio=config.get("expand_ratio", 6),
            mid_channels=config.get("mid_channels"),
            act_func=config.get("act_func", "relu6"),
            use_se=config.get("use_se", False),
        )


class ResidualBlock(nn.Module):
    """A block: its conv layer plus an optional shortcut added to its output (official ``ResidualBlock``)."""

    def __init__(self, conv: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.conv(x)
        return self.conv(x) + self.shortcut(x)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "name": "ResidualBlock",
            "conv": self.conv.config,
            "shortcut": None if self.shortcut is None else self.shortcut.config,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ResidualBlock:
        conv_config = config.get("conv", config.get("mobile_inverted_conv"))
        if conv_config is None:
            raise BadInputError("a block config needs 'conv' (or the older 'mobile_inverted_conv')")
        return cls(layer_from_config(conv_config), layer_from_config(config.get("shortcut")))


def _require_plain(config: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, expected in defaults.items():
        if config.get(key, expected) != expected:
            raise BadInputError(
                f"{config.get('name', 'layer')}: '{key}'={config[key]!r} is not supported (expected {expected!r})"
            )


_LAYERS = {
    "ConvLayer": ConvLayer,
    "LinearLayer": LinearLayer,
    "IdentityLayer": IdentityLayer,
    "MBConvLayer": MBConvLayer,
    "MBInvertedConvLayer": MBConvLayer,  # name used by the older official configs
}


def layer_from_config(config: dict[str, Any] | None) -> nn.Module | None:
    """The layer a ``net.config`` layer dictionary describes; None for None; BadInputError for an unknown name."""
    if config is None:
        return None
    name = config.get("name")
    if name not in _LAYERS:
        raise BadInputError(f"unknown layer '{name}' in net config; known: {sorted(_LAYERS)}")
    return _LAYERS[name].from_config(config)
