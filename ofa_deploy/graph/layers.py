"""A flat list of layers with their shapes: what an analytical cost model reads.

Both the toolkit's own graphs (:func:`layers_from_graph`) and any ONNX CNN
(:mod:`ofa_deploy.graph.onnx_reader`) become this list, so a cost model is written once.
Activations are separate layers (a model decides what it fuses into the layer before); shapes are
(C, H, W) for batch 1; ``params`` counts weights (and biases), which int8 deployment stores as one
byte each.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ofa_deploy.graph.ir import Add, Conv, GlobalAvgPool, Graph, Linear, SqueezeExcite


class LayerKind(str, Enum):
    """The operator kinds a cost model understands (one name each, in JSON and reports: the value)."""

    CONV = "conv"
    DEPTHWISE = "depthwise"
    GROUPED = "grouped_conv"
    FC = "fc"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    GLOBALPOOL = "globalpool"
    ADD = "add"
    MUL = "mul"
    CONCAT = "concat"
    RELU = "relu"
    RELU6 = "relu6"
    LEAKYRELU = "leakyrelu"
    SIGMOID = "sigmoid"
    HARDSIGMOID = "hardsigmoid"
    HARDSWISH = "hardswish"
    RESHAPE = "reshape"  # flatten, reshape, squeeze...: no work, no data movement on an accelerator
    OTHER = "other"  # anything else (the model decides: usually a CPU fall-back)

    def __str__(self) -> str:
        return self.value


ACTIVATIONS = (
    LayerKind.RELU,
    LayerKind.RELU6,
    LayerKind.LEAKYRELU,
    LayerKind.SIGMOID,
    LayerKind.HARDSIGMOID,
    LayerKind.HARDSWISH,
)
CONVOLUTIONS = (LayerKind.CONV, LayerKind.DEPTHWISE, LayerKind.GROUPED, LayerKind.FC)

Shape = tuple[int, int, int]  # C, H, W


@dataclass(frozen=True)
class Layer:
    """One layer of a model as a cost model reads it: operator, (C, H, W) shapes, kernel, stride, groups, parameters."""

    name: str
    op: LayerKind
    in_shape: Shape  # the first feature-map input
    out_shape: Shape
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    groups: int = 1
    params: int = 0  # weights and biases
    inputs: int = 1  # feature-map inputs read (2 for add/mul; n for concat)
    source_op: str = ""  # the original operator type (ONNX op_type), for reports

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a convolution or fully connected layer (0 for others)."""
        if self.op not in CONVOLUTIONS:
            return 0
        c_out, h, w = self.out_shape
        c_in = self.in_shape[0]
        return c_out * h * w * (c_in // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def in_elements(self) -> int:
        c, h, w = self.in_shape
        return c * h * w * self.inputs

    @property
    def out_elements(self) -> int:
        c, h, w = self.out_shape
        return c * h * w


def _shape(nchw: tuple[int, ...]) -> Shape:
    if len(nchw) == 2:
        return (int(nchw[1]), 1, 1)
    _, c, h, w = nchw
    return (int(c), int(h), int(w))


_ACT = {"relu": LayerKind.RELU, "h_swish": LayerKind.HARDSWISH}


def layers_from_graph(graph: Graph) -> list[Layer]:
    """The toolkit's graph (an operator or a whole sub-network) as layers, SE blocks spelled out."""
    shapes: dict[str, Shape] = {graph.input_name: _shape(graph.input_shape)}
    layers: list[Layer] = []
    for i, node in enumerate(graph.nodes):
        if isinstance(node, Conv):
            c_in, h, w = shapes[node.input]
            k, s = node.kernel_size, node.stride
            out = (int(node.weight.shape[0]), (h - 1) // s + 1, (w - 1) // s + 1)
            op = (
                LayerKind.DEPTHWISE
                if node.groups == c_in and node.groups > 1
                else LayerKind.GROUPED
                if node.groups > 1
                else LayerKind.CONV
            )
            params = node.weight.size + (0 if node.bias is None else node.bias.size)
            layers.append(Layer(f"{i}:{node.output}", op, (c_in, h, w), out, (k, k), s, node.groups, params))
            if node.act:
                layers.append(Layer(f"{i}:{node.output}:act", _ACT[node.act], out, out))
        elif isinstance(node, SqueezeExcite):
            c, h, w = out = shapes[node.input]
            se = int(node.reduce_weight.shape[0])
            pooled = (c, 1, 1)
            layers += [
                Layer(f"{i}:se.pool", LayerKind.GLOBALPOOL, out, pooled, kernel=(h, w)),
                Layer(f"{i}:se.reduce", LayerKind.FC, pooled, (se, 1, 1), params=node.reduce_weight.size + se),
                Layer(f"{i}:se.relu", LayerKind.RELU, (se, 1, 1), (se, 1, 1)),
                Layer(f"{i}:se.expand", LayerKind.FC, (se, 1, 1), pooled, params=node.expand_weight.size + c),
                Layer(f"{i}:se.gate", LayerKind.HARDSIGMOID, pooled, pooled),
                Layer(f"{i}:se.scale", LayerKind.MUL, out, out, inputs=2),
            ]
        elif isinstance(node, Add):
            out = shapes[node.a]
            layers.append(Layer(f"{i}:{node.output}", LayerKind.ADD, out, out, inputs=2))
        elif isinstance(node, GlobalAvgPool):
            c, h, w = shapes[node.input]
            out = (c, 1, 1)
            layers.append(Layer(f"{i}:{node.output}", LayerKind.GLOBALPOOL, (c, h, w), out, kernel=(h, w)))
        elif isinstance(node, Linear):
            c_out, c_in = node.weight.shape
            out = (int(c_out), 1, 1)
            layers.append(
                Layer(f"{i}:{node.output}", LayerKind.FC, (int(c_in), 1, 1), out, params=node.weight.size + c_out)
            )
        else:  # pragma: no cover - the graph builder makes nothing else
            raise TypeError(f"unknown graph node {type(node).__name__}")
        shapes[node.output] = out
    return layers
