"""Weights of a static torch MobileNetV3 as graph weights (BatchNorm folded), in operator order."""

from __future__ import annotations

import torch
from torch import nn

from ofa_deploy.graph.ir import BlockWeights, ConvWeights, WeightSource
from ofa_deploy.nn.layers import ConvLayer
from ofa_deploy.nn.mobilenet_v3 import MobileNetV3
from ofa_deploy.space.ops import OpSpec


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> ConvWeights:
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else None
    if bn is not None:
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
        w = w * scale[:, None, None, None]
        b = (
            (b if b is not None else 0.0) * scale
            + bn.bias.detach().double()
            - bn.running_mean.detach().double() * scale
        )
    return ConvWeights(w.float().numpy(), None if b is None else b.float().numpy())


def _conv_layer(layer: ConvLayer) -> ConvWeights:
    return _fold(layer.conv, getattr(layer, "bn", None))


def torch_weights(net: MobileNetV3) -> WeightSource:
    """A weight source for ``build_graph(arch_ops(arch, w), ...)`` from the extracted network."""
    per_op: list = [_conv_layer(net.first_conv)]
    for block in net.blocks:
        mb = block.conv
        se = None
        if mb.use_se:
            fc = mb.depth_conv.se.fc
            se = tuple(
                t.detach().float().numpy() for t in (fc.reduce.weight, fc.reduce.bias, fc.expand.weight, fc.expand.bias)
            )
        ib = mb.inverted_bottleneck
        per_op.append(
            BlockWeights(
                expand=None if ib is None else _fold(ib.conv, ib.bn),
                depthwise=_fold(mb.depth_conv.conv, mb.depth_conv.bn),
                se=se,
                project=_fold(mb.point_linear.conv, mb.point_linear.bn),
            )
        )
    per_op.append(_conv_layer(net.final_expand_layer))
    per_op.append(None)  # global average pooling
    per_op.append(_conv_layer(net.feature_mix_layer))
    linear = net.classifier.linear
    per_op.append(ConvWeights(linear.weight.detach().float().numpy(), linear.bias.detach().float().numpy()))

    def source(index: int, op: OpSpec):
        if index >= len(per_op):
            raise ValueError(f"the network has {len(per_op)} operators; asked for operator {index} ({op.key})")
        return per_op[index]

    return source
