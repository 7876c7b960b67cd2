"""The ONNX layer reader against the zoo's published GOPs, the toolkit's own graphs and hand-made graphs."""

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.graph.layers import LayerKind, layers_from_graph
from ofa_deploy.graph.onnx_reader import layers_from_onnx
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_deploy.space.arch import largest_arch, smallest_arch
from ofa_deploy.space.ops import arch_ops
from tests import reference_cnns

# The zoo's "OPS per image" (2 ops per MAC), /work/shared/data/fpga_reference.md section 4.
PUBLISHED_GOPS = {
    "cf_resnet50": 7.7,
    "cf_resnet18": 3.65,
    "tf_mobilenetv1": 1.14,
    "cf_mobilenetv2": 0.608,  # "0.59G" in the name, 608M in the table
    "tf_mobilenetv2": 1.17,  # MobileNetV2 1.4 (1.16 in later releases)
    "cf_squeeze": 0.76,
}
MODELS = reference_cnns.reference_models()


def gops(layers) -> float:
    return 2 * sum(layer.macs for layer in layers) / 1e9


def counts(layers) -> Counter:
    return Counter(layer.op for layer in layers)


@pytest.fixture(scope="module")
def reference_layers():
    return {name: layers_from_onnx(build()) for name, build in MODELS.items()}


# ---------------------------------------------------------------------- (a) the zoo's models


def test_reference_models_are_the_zoo_list():
    assert set(MODELS) == set(PUBLISHED_GOPS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GOPS))
def test_reference_gops_match_the_zoo(reference_layers, name):
    assert gops(reference_layers[name]) == pytest.approx(PUBLISHED_GOPS[name], rel=0.05)


def test_tf_slim_resnet50_matches_the_zoo():
    assert gops(layers_from_onnx(reference_cnns.resnet50_tf_slim())) == pytest.approx(6.97, rel=0.05)


def test_resnet50_layers(reference_layers):
    layers = reference_layers["cf_resnet50"]
    c = counts(layers)
    assert (
        c[LayerKind.CONV],
        c[LayerKind.FC],
        c[LayerKind.ADD],
        c[LayerKind.RELU],
        c[LayerKind.MAXPOOL],
        c[LayerKind.GLOBALPOOL],
    ) == (53, 1, 16, 49, 1, 1)
    assert c[LayerKind.MUL] == 0  # every BatchNormalization folded into its conv
    assert [layer.source_op for layer in layers if layer.op == LayerKind.OTHER] == ["Softmax"]
    conv1, fc = layers[0], next(layer for layer in layers if layer.op == LayerKind.FC)
    assert (conv1.in_shape, conv1.out_shape, conv1.kernel, conv1.stride) == ((3, 224, 224), (64, 112, 112), (7, 7), 2)
    assert conv1.params == 64 * 3 * 7 * 7 + 64  # weight + the bias folded from BN
    assert (fc.in_shape, fc.out_shape, fc.params) == ((2048, 1, 1), (1000, 1, 1), 2048 * 1000 + 1000)
    # Caffe: the first 1x1 of a downsampling bottleneck strides
    res3a = next(layer for layer in layers if "res3a_branch2a" in layer.name)
    assert (res3a.stride, res3a.out_shape) == (2, (128, 28, 28))
    v15 = next(
        layer for layer in layers_from_onnx(reference_cnns.resnet50(caffe=False)) if "res3a_branch2a" in layer.name
    )
    assert (v15.stride, v15.out_shape) == (1, (128, 56, 56))


def test_other_reference_layer_counts(reference_layers):
    c = counts(reference_layers["cf_resnet18"])
    assert (c[LayerKind.CONV], c[LayerKind.FC], c[LayerKind.ADD]) == (20, 1, 8)
    for name in ("cf_mobilenetv2", "tf_mobilenetv2"):
        c = counts(reference_layers[name])
        assert (c[LayerKind.DEPTHWISE], c[LayerKind.CONV], c[LayerKind.ADD], c[LayerKind.RELU6], c[LayerKind.FC]) == (
            17,
            35,
            10,
            35,
            1,
        )
    c = counts(reference_layers["tf_mobilenetv1"])
    assert (c[LayerKind.DEPTHWISE], c[LayerKind.CONV], c[LayerKind.RELU6], c[LayerKind.FC]) == (13, 14, 27, 1)
    c = counts(reference_layers["cf_squeeze"])
    assert (c[LayerKind.CONV], c[LayerKind.CONCAT], c[LayerKind.MAXPOOL], c[LayerKind.FC]) == (26, 8, 3, 0)
    wide = reference_layers["tf_mobilenetv2"]
    assert wide[0].out_shape == (48, 112, 112)  # make_divisible(32 * 1.4, 8)
    assert [layer for layer in wide if layer.op == LayerKind.CONV][-1].out_shape == (
        1792,
        7,
        7,
    )  # 1280 scaled with the width
    dw = next(layer for layer in wide if layer.op == LayerKind.DEPTHWISE)
    assert dw.groups == dw.in_shape[0] == 48 and dw.params == 48 * 9 + 48


def test_squeezenet_v1_0_is_not_the_zoo_model():
    assert gops(layers_from_onnx(reference_cnns.squeezenet("1.0"))) > 1.5


# ---------------------------------------------------------------------- (b) weights as inputs or data


@pytest.mark.parametrize("name", sorted(PUBLISHED_GOPS))
def test_weights_as_inputs_or_zero_initializers_read_the_same(reference_layers, name):
    zeros = MODELS[name](weights="zeros")
    assert not any(i.name.endswith("weight") for i in zeros.graph.input)
    assert layers_from_onnx(zeros) == reference_layers[name]


def test_path_bytes_and_proto_read_the_same(tmp_path, reference_layers):
    model = reference_cnns.mobilenet_v2(weights="zeros")
    path = tmp_path / "mnv2.onnx"
    onnx.save(model, str(path))
    expected = reference_layers["cf_mobilenetv2"]
    assert layers_from_onnx(path) == layers_from_onnx(str(path)) == layers_from_onnx(path.read_bytes()) == expected


# ---------------------------------------------------------------------- (c) the toolkit's own writer


def _comparable(layers):
    """The writer spells an SE fc as a 1x1 conv on a 1x1 map and a Linear as Flatten + Gemm."""
    return [
        (
            LayerKind.CONV if layer.op == LayerKind.FC else layer.op,
            layer.in_shape,
            layer.out_shape,
            layer.macs,
            layer.params,
            layer.inputs,
            layer.stride,
            layer.groups,
            layer.kernel,
        )
        for layer in layers
        if layer.op != LayerKind.RESHAPE
    ]


@pytest.mark.parametrize("arch", [largest_arch(), smallest_arch()], ids=["largest", "smallest"])
@pytest.mark.parametrize("width", [1.0, 1.2])
def test_toolkit_onnx_reads_back_as_its_graph(arch, width):
    graph = build_graph(arch_ops(arch, width))
    expected, got = layers_from_graph(graph), layers_from_onnx(to_onnx_bytes(graph))
    assert sum(layer.macs for layer in got) == sum(layer.macs for layer in expected)
    for op in (
        LayerKind.DEPTHWISE,
        LayerKind.HARDSWISH,
        LayerKind.HARDSIGMOID,
        LayerKind.MUL,
        LayerKind.ADD,
        LayerKind.GLOBALPOOL,
    ):
        assert counts(got)[op] == counts(expected)[op], op
    assert (
        counts(got)[LayerKind.HARDSWISH] > 0 and counts(got)[LayerKind.HARDSIGMOID] > 0
    )  # written as HardSwish / HardSigmoid ops
    assert _comparable(got) == _comparable(expected)


# ---------------------------------------------------------------------- hand-made graphs: the rules


def _model(nodes, inits=(), inputs=None, opset=17, extra_opsets=(), out_rank=4):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])]
    out = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [None] * out_rank)
    graph = helper.make_graph(nodes, "g", inputs, [out], list(inits))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in extra_opsets)]
    return helper.make_model(graph, opset_imports=opsets)


def _init(name, shape, value=0.0):
    return numpy_helper.from_array(np.full(shape, value, dtype=np.float32), name)


def _scalar(name, value):
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def test_operator_rules():
    n = helper.make_node
    inits = [
        _init("w_pad", (8, 8, 3, 3)),
        _init("w_dw", (8, 1, 3, 3)),
        _init("w_g", (16, 4, 3, 3)),
        _init("bn_s", (16,)),
        _init("bn_b", (16,)),
        _init("bn_m", (16,)),
        _init("bn_v", (16,), 1.0),
        _init("w_t", (16, 8, 2, 2)),
        _scalar("zero", 0.0),
        _scalar("six", 6.0),
        _scalar("three", 3.0),
        _scalar("minus1", -1.0),
        _init("w_mm", (8, 10)),
        _init("b_mm", (10,)),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "hw_axes"),
    ]
    nodes = [
        n("Pad", ["x", "pads"], ["p"], mode="constant"),
        n("Conv", ["p", "w_pad"], ["c0"], kernel_shape=[3, 3]),  # pad folded: in_shape unpadded
        n("Relu", ["c0"], ["r0"]),
        n("Conv", ["r0", "w_dw"], ["dw"], group=8, kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
        n("Clip", ["dw", "zero", "six"], ["r6"]),
        n("Conv", ["r6", "w_g"], ["g"], group=2, kernel_shape=[3, 3], pads=[1] * 4),
        n("BatchNormalization", ["g", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),  # folded
        n("Clip", ["bn", "zero"], ["relu"]),
        n("BatchNormalization", ["relu", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn2"]),  # standalone: a scale
        n("Add", ["bn2", "three"], ["hs_a"]),  # decomposed hard-swish: x * relu6(x + 3) / 6
        n("Clip", ["hs_a", "zero", "six"], ["hs_b"]),
        n("Mul", ["bn2", "hs_b"], ["hs_c"]),
        n("Div", ["hs_c", "six"], ["hs"]),
        n("Clip", ["hs", "minus1", "six"], ["clipped"]),  # other bounds: LayerKind.OTHER
        n("ConvTranspose", ["clipped", "w_t"], ["up"], kernel_shape=[2, 2], strides=[2, 2]),
        n("LeakyRelu", ["up"], ["lr"], alpha=0.1),
        n("Sigmoid", ["lr"], ["sg"]),
        n("AveragePool", ["sg"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        n("MaxPool", ["ap"], ["mp"], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4),
        n("Concat", ["mp", "ap", "mp"], ["cat"], axis=1),
        n("Softmax", ["cat"], ["sm"], axis=1),
        n("Transpose", ["sm"], ["tr"], perm=[0, 2, 3, 1]),  # a real transpose: LayerKind.OTHER
        n("Transpose", ["tr"], ["tr2"], perm=[0, 3, 1, 2]),
        n("ReduceMean", ["tr2", "hw_axes"], ["gap"], keepdims=1),
        n("Transpose", ["gap"], ["nhwc"], perm=[0, 2, 3, 1]),  # moves only size-1 axes: free
        n("Flatten", ["nhwc"], ["flat"]),
        n("Slice", ["flat", "s0", "s1", "s_ax"], ["sl"]),
        n("MatMul", ["sl", "w_mm"], ["mm"]),
        n("Add", ["mm", "b_mm"], ["logits"]),  # bias of the MatMul: folded
    ]
    inits += [
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
        numpy_helper.from_array(np.array([8], dtype=np.int64), "s1"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "s_ax"),
    ]
    model = _model(nodes, inits, opset=18, out_rank=2)
    onnx.checker.check_model(model)
    layers = layers_from_onnx(model)
    ops = [(layer.op, layer.source_op) for layer in layers]
    assert ops == [
        (LayerKind.CONV, "Conv"),
        (LayerKind.RELU, "Relu"),
        (LayerKind.DEPTHWISE, "Conv"),
        (LayerKind.RELU6, "Clip"),
        (LayerKind.GROUPED, "Conv"),
        (LayerKind.RELU, "Clip"),
        (LayerKind.MUL, "BatchNormalization"),
        (LayerKind.MUL, "Add"),
        (LayerKind.RELU6, "Clip"),
        (LayerKind.MUL, "Mul"),
        (LayerKind.MUL, "Div"),
        (LayerKind.OTHER, "Clip"),
        (LayerKind.CONV, "ConvTranspose"),
        (LayerKind.LEAKYRELU, "LeakyRelu"),
        (LayerKind.SIGMOID, "Sigmoid"),
        (LayerKind.AVGPOOL, "AveragePool"),
        (LayerKind.MAXPOOL, "MaxPool"),
        (LayerKind.CONCAT, "Concat"),
        (LayerKind.OTHER, "Softmax"),
        (LayerKind.OTHER, "Transpose"),
        (LayerKind.OTHER, "Transpose"),
        (LayerKind.GLOBALPOOL, "ReduceMean"),
        (LayerKind.RESHAPE, "Transpose"),
        (LayerKind.RESHAPE, "Flatten"),
        (LayerKind.OTHER, "Slice"),
        (LayerKind.FC, "MatMul"),
    ]
    by = {layer.name.split(":", 1)[1]: layer for layer in layers}
    assert by["c0"].in_shape == (8, 16, 16) and by["c0"].out_shape == (8, 16, 16)
    assert by["dw"].out_shape == (8, 8, 8) and by["dw"].stride == 2 and by["dw"].groups == 8
    assert by["g"].params == 16 * 4 * 9 + 16 and by["g"].macs == 16 * 8 * 8 * 4 * 9  # BN bias folded in
    assert by["bn2"].params == 32 and by["bn2"].inputs == 1
    assert by["hs_a"].params == 1 and by["hs_a"].inputs == 1
    assert by["hs_c"].inputs == 2
    assert by["up"].out_shape == (8, 16, 16) and by["up"].kernel == (2, 2)
    assert by["cat"].inputs == 3 and by["cat"].in_shape == (8, 8, 8) and by["cat"].out_shape == (24, 8, 8)
    assert by["gap"].kernel == (8, 8) and by["gap"].out_shape == (24, 1, 1)
    assert by["mm"].in_shape == (8, 1, 1) and by["mm"].out_shape == (10, 1, 1)
    assert by["mm"].params == 8 * 10 + 10 and by["mm"].macs == 80


def test_unknown_ops_are_other_and_keep_the_shape():
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        n("MyNorm", ["c1"], ["u"], domain="custom.ops"),
        n("Conv", ["u", "w2"], ["c2"], kernel_shape=[1, 1], strides=[2, 2]),
        n("Erf", ["c2"], ["y"]),
    ]
    model = _model(nodes, [_init("w1", (8, 8, 3, 3)), _init("w2", (4, 8, 1, 1))], extra_opsets=["custom.ops"])
    layers = layers_from_onnx(model)
    assert [(layer.op, layer.source_op) for layer in layers] == [
        (LayerKind.CONV, "Conv"),
        (LayerKind.OTHER, "MyNorm"),
        (LayerKind.CONV, "Conv"),
        (LayerKind.OTHER, "Erf"),
    ]
    assert layers[1].out_shape == (8, 16, 16)  # assumed shape-preserving
    assert layers[2].out_shape == (4, 8, 8) and layers[3].out_shape == (4, 8, 8)


def test_weight_inputs_are_not_data_inputs():
    """A MatMul or Conv whose weight is a graph input without data: the data input is the other one."""
    n = helper.make_node
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("w", f, [4, 8, 1, 1]),
        helper.make_tensor_value_info("x", f, ["batch", 8, 16, 16]),
        helper.make_tensor_value_info("fc_w", f, [4, 3]),
    ]
    nodes = [
        n("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        n("GlobalAveragePool", ["c"], ["p"]),
        n("Flatten", ["p"], ["f"]),
        n("MatMul", ["f", "fc_w"], ["y"]),
    ]
    model = _model(nodes, inputs=inputs, out_rank=2)
    layers = layers_from_onnx(model)  # the dynamic batch is taken as 1
    assert [layer.op for layer in layers] == [LayerKind.CONV, LayerKind.GLOBALPOOL, LayerKind.RESHAPE, LayerKind.FC]
    assert layers[0].in_shape == (8, 16, 16) and layers[-1].macs == 12


# ---------------------------------------------------------------------- (e) errors


def test_batch_above_one_is_bad_input():
    model = reference_cnns.resnet18()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    with pytest.raises(BadInputError, match="batch 2"):
        layers_from_onnx(model, source="r18.onnx")


def test_dynamic_batch_is_one_and_dynamic_size_is_bad_input(reference_layers):
    model = reference_cnns.resnet18()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert layers_from_onnx(model) == reference_layers["cf_resnet18"]
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(BadInputError, match="dynamic dimension 'height'"):
        layers_from_onnx(model)


def test_corrupt_and_missing_files_are_bad_input(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(BadInputError, match="corrupt.onnx"):
        layers_from_onnx(corrupt)
    with pytest.raises(BadInputError, match="missing.onnx"):
        layers_from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(BadInputError, match="my-model"):
        layers_from_onnx(b"garbage" * 3, source="my-model")


def test_invalid_graph_is_bad_input():
    n = helper.make_node
    model = _model([n("Relu", ["nowhere"], ["y"])])  # reads a tensor nothing produces
    with pytest.raises(BadInputError, match="invalid ONNX model"):
        layers_from_onnx(model, source="broken.onnx")


def test_legacy_opset_clip_attributes_and_initializers_listed_as_inputs():
    n = helper.make_node
    f = TensorProto.FLOAT
    nodes = [
        n("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
        n("Clip", ["c"], ["r6"], min=0.0, max=6.0),
        n("Clip", ["r6"], ["r"], min=0.0),
        n("Sum", ["r", "r6", "c"], ["s"]),
    ]
    inputs = [helper.make_tensor_value_info("x", f, [1, 3, 8, 8]), helper.make_tensor_value_info("w", f, [4, 3, 3, 3])]
    model = _model(nodes, [_init("w", (4, 3, 3, 3))], inputs=inputs, opset=10)
    model.ir_version = 3
    layers = layers_from_onnx(model)
    assert [layer.op for layer in layers] == [LayerKind.CONV, LayerKind.RELU6, LayerKind.RELU, LayerKind.ADD]
    assert layers[0].out_shape == (4, 6, 6) and layers[-1].inputs == 3
