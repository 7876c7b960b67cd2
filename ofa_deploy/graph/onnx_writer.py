"""Graph -> ONNX model (opset 18), built directly with ``onnx.helper`` (fast: no torch export)."""

from __future__ import annotations

import json

import numpy as np

from ofa_deploy.graph.ir import Add, Conv, GlobalAvgPool, Graph, Linear, SqueezeExcite
from ofa_deploy.graph.onnx_module import onnx_module

OP_KEYS_METADATA = "ofa_deploy.op_keys"  # model property: the LUT key of each op<index>_ tensor-name prefix

OPSET = 18


def to_onnx(graph: Graph, name: str = "ofa_subnet"):
    """The ``onnx.ModelProto`` of the graph (input ``input`` NCHW float32, output ``output``)."""
    onnx = onnx_module()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    nodes, inits = [], []

    def const(array: np.ndarray, tag: str) -> str:
        name_ = f"{tag}_{len(inits)}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name_))
        return name_

    def act(x: str, kind: str, out: str) -> None:
        if kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out]))
        elif kind == "h_swish":
            nodes.append(helper.make_node("HardSwish", [x], [out]))
        else:
            raise ValueError(f"unsupported activation {kind!r}")

    last = {graph.output_name: "output"}
    out_name = lambda n: last.get(n, n)  # noqa: E731 - the graph output gets the public name

    for node in graph.nodes:
        if isinstance(node, Conv):
            k = node.kernel_size
            inputs = [node.input, const(node.weight, "w")]
            if node.bias is not None:
                inputs.append(const(node.bias, "b"))
            conv_out = node.output + "_conv" if node.act else out_name(node.output)
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [conv_out],
                    kernel_shape=[k, k],
                    strides=[node.stride] * 2,
                    pads=[k // 2] * 4,
                    group=node.groups,
                )
            )
            if node.act:
                act(conv_out, node.act, out_name(node.output))
        elif isinstance(node, SqueezeExcite):
            p = node.output
            nodes += [
                helper.make_node("GlobalAveragePool", [node.input], [p + "_pool"]),
                helper.make_node(
                    "Conv",
                    [p + "_pool", const(node.reduce_weight, "w"), const(node.reduce_bias, "b")],
                    [p + "_reduce"],
                    kernel_shape=[1, 1],
                ),
                helper.make_node("Relu", [p + "_reduce"], [p + "_relu"]),
                helper.make_node(
                    "Conv",
                    [p + "_relu", const(node.expand_weight, "w"), const(node.expand_bias, "b")],
                    [p + "_expand"],
                    kernel_shape=[1, 1],
                ),
                helper.make_node("HardSigmoid", [p + "_expand"], [p + "_gate"], alpha=1.0 / 6.0, beta=0.5),
                helper.make_node("Mul", [node.input, p + "_gate"], [out_name(node.output)]),
            ]
        elif isinstance(node, Add):
            nodes.append(helper.make_node("Add", [node.a, node.b], [out_name(node.output)]))
        elif isinstance(node, GlobalAvgPool):
            nodes.append(helper.make_node("GlobalAveragePool", [node.input], [out_name(node.output)]))
        elif isinstance(node, Linear):
            flat = node.output + "_flat"
            nodes.append(helper.make_node("Flatten", [node.input], [flat], axis=1))
            nodes.append(
                helper.make_node(
                    "Gemm", [flat, const(node.weight, "w"), const(node.bias, "b")], [out_name(node.output)], transB=1
                )
            )
        else:
            raise TypeError(f"unknown node {type(node).__name__}")

    if graph.nodes and graph.input_name == graph.output_name:
        raise ValueError("empty graph")
    for node in nodes:  # runtimes name profiled nodes after these: the op<index>_ prefix maps them to operators
        node.name = graph.output_name if node.output[0] == "output" else node.output[0]
    tensor = onnx.TensorProto.FLOAT
    model = helper.make_model(
        helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("input", tensor, list(graph.input_shape))],
            [helper.make_tensor_value_info("output", tensor, list(graph.output_shape))],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ofa-deploy",
    )
    model.ir_version = 8
    if graph.op_keys:  # which LUT operator each op<index>_ prefix of a tensor name stands for
        helper.set_model_props(model, {OP_KEYS_METADATA: json.dumps(graph.op_keys)})
    return model


def to_onnx_bytes(graph: Graph, name: str = "ofa_subnet") -> bytes:
    """The serialized ONNX model of the graph (see :func:`to_onnx`)."""
    return to_onnx(graph, name).SerializeToString()
