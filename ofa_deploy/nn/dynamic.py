"""Weight-sharing layers of the supernet: each holds the largest weights and runs a slice of them.

Parameter names nest as in the official OFA code (``conv.conv.weight``, ``bn.bn.running_var``,
``7to5_matrix``), which is what makes official checkpoints load without renaming.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ofa_deploy.nn.layers import MBConvLayer, SEModule, build_activation, same_padding
from ofa_deploy.space.geometry import middle_channels, se_channels


def _centre_crop(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    start = (weight.shape[-1] - kernel_size) // 2
    return weight[..., start : start + kernel_size, start : start + kernel_size]


class DynamicConv2d(nn.Module):
    """1x1 conv whose active output channels are set per call; input channels follow the input."""

    def __init__(self, max_in_channels: int, max_out_channels: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = nn.Conv2d(max_in_channels, max_out_channels, kernel_size, stride, bias=False)
        self.active_out_channel = max_out_channels

    def active_filter(self, out_channels: int, in_channels: int) -> torch.Tensor:
        return self.conv.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        out = self.active_out_channel if out_channels is None else out_channels
        weight = self.active_filter(out, x.shape[1]).contiguous()
        return F.conv2d(x, weight, None, self.stride, same_padding(self.kernel_size))


class DynamicSeparableConv2d(nn.Module):
    """Depthwise conv with elastic kernel size.

    Smaller kernels are the centre of the larger one passed through a learned per-layer matrix
    (``7to5_matrix`` 25x25, ``5to3_matrix`` 9x9, identity at init, shared by all channels), one step
    at a time: 7 -> 5 -> 3.
    """

    def __init__(self, max_channels: int, kernel_sizes: tuple[int, ...], stride: int = 1):
        super().__init__()
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        self.stride = stride
        k_max = self.kernel_sizes[-1]
        self.conv = nn.Conv2d(max_channels, max_channels, k_max, stride, groups=max_channels, bias=False)
        for larger, smaller in zip(self.kernel_sizes[1:], self.kernel_sizes[:-1]):
            self.register_parameter(f"{larger}to{smaller}_matrix", nn.Parameter(torch.eye(smaller * smaller)))
        self.active_kernel_size = k_max

    def active_filter(self, channels: int, kernel_size: int) -> torch.Tensor:
        weight = self.conv.weight[:channels]
        for larger, smaller in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1]):
            if larger <= kernel_size:
                break
            crop = _centre_crop(weight, smaller).reshape(channels, smaller * smaller)
            matrix = getattr(self, f"{larger}to{smaller}_matrix")
            weight = F.linear(crop, matrix).reshape(channels, 1, smaller, smaller)
        return weight

    def forward(self, x: torch.Tensor, kernel_size: int | None = None) -> torch.Tensor:
        k = self.active_kernel_size if kernel_size is None else kernel_size
        channels = x.shape[1]
        weight = self.active_filter(channels, k).contiguous()
        return F.conv2d(x, weight, None, self.stride, same_padding(k), 1, channels)


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first ``C`` channels of the largest BN, ``C`` given by the input."""

    def __init__(self, max_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.shape[1]
        if c == bn.num_features:
            return bn(x)
        factor = 0.0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked += 1
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return F.batch_norm(
            x,
            bn.running_mean[:c],
            bn.running_var[:c],
            bn.weight[:c],
            bn.bias[:c],
            bn.training or not bn.track_running_stats,
            factor,
            bn.eps,
        )


class DynamicSE(SEModule):
    """SE whose width follows its input; the reduced width is ``make_divisible(C // 4)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        mid = se_channels(c)
        reduce, expand = self.fc.reduce, self.fc.expand
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(F.conv2d(y, reduce.weight[:mid, :c].contiguous(), reduce.bias[:mid]))
        y = F.conv2d(y, expand.weight[:c, :mid].contiguous(), expand.bias[:c])
        return x * F.relu6(y + 3.0) / 6.0


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d) -> None:
    c = target.num_features
    target.weight.data.copy_(source.weight.data[:c])
    target.bias.data.copy_(source.bias.data[:c])
    target.running_mean.data.copy_(source.running_mean.data[:c])
    target.running_var.data.copy_(source.running_var.data[:c])
    target.num_batches_tracked.data.copy_(source.num_batches_tracked.data)


def _reorder_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        tensor.data = torch.index_select(tensor.data, 0, idx)


class DynamicMBConvLayer(nn.Module):
    """Inverted bottleneck with elastic kernel size and expand ratio."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: tuple[int, ...],
        expand_ratios: tuple[int, ...],
        stride: int,
        act_func: str,
        use_se: bool,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.stride, self.act_func, self.use_se = stride, act_func, use_se
        max_mid = middle_channels(in_channels, max(self.expand_ratios))

        self.inverted_bottleneck = nn.Sequential(
            OrderedDict(
                [
                    ("conv", DynamicConv2d(in_channels, max_mid)),
                    ("bn", DynamicBatchNorm2d(max_mid)),
                    ("act", build_activation(act_func)),
                ]
            )
        )
        depth_modules: list[tuple[str, nn.Module]] = [
            ("conv", DynamicSeparableConv2d(max_mid, self.kernel_sizes, stride)),
            ("bn", DynamicBatchNorm2d(max_mid)),
            ("act", build_activation(act_func)),
        ]
        if use_se:
            depth_modules.append(("se", DynamicSE(max_mid)))
        self.depth_conv = nn.Sequential(OrderedDict(depth_modules))
        self.point_linear = nn.Sequential(
            OrderedDict([("conv", DynamicConv2d(max_mid, out_channels)), ("bn", DynamicBatchNorm2d(out_channels))])
        )
        self.active_kernel_size = max(self.kernel_sizes)
        self.active_expand_ratio = max(self.expand_ratios)

    def active_middle_channels(self, in_channels: int) -> int:
        return middle_channels(in_channels, self.active_expand_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inverted_bottleneck.conv.active_out_channel = self.active_middle_channels(x.shape[1])
        self.depth_conv.conv.active_kernel_size = self.active_kernel_size
        x = self.inverted_bottleneck(x)
        x = self.depth_conv(x)
        return self.point_linear(x)

    @torch.no_grad()
    def active_subnet(self, in_channels: int) -> MBConvLayer:
        """A static copy of this block at its active kernel size and expand ratio."""
        mid = self.active_middle_channels(in_channels)
        layer = MBConvLayer(
            in_channels,
            self.out_channels,
            kernel_size=self.active_kernel_size,
            stride=self.stride,
            expand_ratio=self.active_expand_ratio,
            mid_channels=mid,
            act_func=self.act_func,
            use_se=self.use_se,
        ).to(self.point_linear.conv.conv.weight.device)
        ib, dc, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        layer.inverted_bottleneck.conv.weight.copy_(ib.conv.active_filter(mid, in_channels))
        _copy_bn(layer.inverted_bottleneck.bn, ib.bn.bn)
        layer.depth_conv.conv.weight.copy_(dc.conv.active_filter(mid, self.active_kernel_size))
        _copy_bn(layer.depth_conv.bn, dc.bn.bn)
        if self.use_se:
            se_mid = se_channels(mid)
            src, dst = dc.se.fc, layer.depth_conv.se.fc
            dst.reduce.weight.copy_(src.reduce.weight[:se_mid, :mid])
            dst.reduce.bias.copy_(src.reduce.bias[:se_mid])
            dst.expand.weight.copy_(src.expand.weight[:mid, :se_mid])
            dst.expand.bias.copy_(src.expand.bias[:mid])
        layer.point_linear.conv.weight.copy_(pl.conv.active_filter(self.out_channels, mid))
        _copy_bn(layer.point_linear.bn, pl.bn.bn)
        return layer

    @torch.no_grad()
    def re_organize_middle_weights(self, expand_ratio_stage: int = 0) -> None:
        """Channel sorting: put the middle channels with the largest L1 norm of the projection
        weights first, so every expand ratio keeps the most important ones.

        With ``expand_ratio_stage = s > 0`` (progressive shrinking), channels are first grouped by the
        ``s + 1`` largest widths so those already trained stay in front.
        """
        importance = self.point_linear.conv.conv.weight.abs().sum(dim=(0, 2, 3))
        if expand_ratio_stage > 0:
            widths = [middle_channels(self.in_channels, e) for e in sorted(self.expand_ratios, reverse=True)]
            right, penalty = len(importance), -len(widths) * 1e5
            for i in range(expand_ratio_stage + 1):
                importance[widths[i] : right] += penalty
                penalty += 1e5
                right = widths[i]
        order = torch.argsort(importance, descending=True)

        pl = self.point_linear.conv.conv
        pl.weight.data = torch.index_select(pl.weight.data, 1, order)
        dw = self.depth_conv.conv.conv
        dw.weight.data = torch.index_select(dw.weight.data, 0, order)
        _reorder_bn(self.depth_conv.bn.bn, order)
        if self.use_se:
            fc = self.depth_conv.se.fc
            fc.expand.weight.data = torch.index_select(fc.expand.weight.data, 0, order)
            fc.expand.bias.data = torch.index_select(fc.expand.bias.data, 0, order)
            fc.reduce.weight.data = torch.index_select(fc.reduce.weight.data, 1, order)
            se_order = torch.argsort(fc.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            fc.expand.weight.data = torch.index_select(fc.expand.weight.data, 1, se_order)
            fc.reduce.weight.data = torch.index_select(fc.reduce.weight.data, 0, se_order)
            fc.reduce.bias.data = torch.index_select(fc.reduce.bias.data, 0, se_order)
        ib = self.inverted_bottleneck.conv.conv
        ib.weight.data = torch.index_select(ib.weight.data, 0, order)
        _reorder_bn(self.inverted_bottleneck.bn.bn, order)
