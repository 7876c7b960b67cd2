"""The standard CNNs of the Xilinx AI Model Zoo as ONNX models, to calibrate latency models against.

Each builder returns an ``onnx.ModelProto`` (made with ``onnx.helper``, no torch) of the float model
as the zoo defines it: input ``input`` of shape (1, 3, 224, 224) (SqueezeNet: 227), 1000 classes,
output ``prob`` (the softmax the zoo's deploy models end with). Convolutions are followed by
BatchNormalization as in the float models (a deployment folds them; so does
:func:`~ofa_deploy.graph.onnx_reader.layers_from_onnx`).

``weights="inputs"`` (the default) declares every weight tensor (conv, BN, fc) as a graph input
without data: a model of a few kilobytes that shape inference, the layer reader and a cost model
handle like the real one. ``weights="zeros"`` stores them as zero initializers: a normal ONNX file
that onnxruntime runs. Small constants (Clip bounds) are always initializers.

:func:`reference_models` maps the zoo's model names to builders. The zoo counts 2 operations per MAC;
``2 * sum(layer.macs)`` of these models matches its "OPS per image" column within 3% (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ofa_deploy.graph.onnx_module import onnx_module

__all__ = [
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "reference_models",
    "resnet18",
    "resnet50",
    "resnet50_tf_slim",
    "squeezenet",
]

OPSET = 17
CLASSES = 1000


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The TF/torchvision MobileNet channel rounding: nearest multiple of ``divisor``, never 10% down."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class _Net:
    """A small graph builder: tracks channels per tensor and where weights go."""

    def __init__(self, name: str, size: int, weights: str) -> None:
        if weights not in ("inputs", "zeros"):
            raise ValueError(f"weights must be 'inputs' or 'zeros', not {weights!r}")
        self.onnx = onnx_module()
        helper = self.onnx.helper
        self.name, self.weights = name, weights
        self.nodes: list = []
        self.inputs = [helper.make_tensor_value_info("input", self.onnx.TensorProto.FLOAT, [1, 3, size, size])]
        self.inits: list = []
        self.channels = {"input": 3}
        self._clip_bounds = False

    # -- tensors

    def _weight(self, name: str, shape: Sequence[int]) -> str:
        if self.weights == "inputs":
            self.inputs.append(self.onnx.helper.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT, list(shape)))
        else:
            self.inits.append(self.onnx.numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], output: str, channels: int, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attrs))
        self.channels[output] = channels
        return output

    # -- layers

    def conv(
        self,
        x: str,
        name: str,
        out: int,
        k: int,
        stride: int = 1,
        pad: int | None = None,
        groups: int = 1,
        bn: bool = True,
        act: str | None = "relu",
    ) -> str:
        c_in = self.channels[x]
        pad = k // 2 if pad is None else pad
        inputs = [x, self._weight(f"{name}.weight", (out, c_in // groups, k, k))]
        if not bn:
            inputs.append(self._weight(f"{name}.bias", (out,)))
        y = self._node(
            "Conv", inputs, name, out, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4, group=groups
        )
        if bn:
            params = [self._weight(f"{name}.bn.{p}", (out,)) for p in ("scale", "bias", "mean", "var")]
            y = self._node("BatchNormalization", [y, *params], f"{name}.bn", out)
        return self.act(y, act)

    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        c = self.channels[x]
        if kind == "relu":
            return self._node("Relu", [x], f"{x}.relu", c)
        if kind == "relu6":
            if not self._clip_bounds:
                numpy_helper = self.onnx.numpy_helper
                self.inits += [
                    numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6.min"),
                    numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6.max"),
                ]
                self._clip_bounds = True
            return self._node("Clip", [x, "relu6.min", "relu6.max"], f"{x}.relu6", c)
        raise ValueError(f"unknown activation {kind!r}")

    def maxpool(self, x: str, name: str, k: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        return self._node(
            "MaxPool",
            [x],
            name,
            self.channels[x],
            kernel_shape=[k, k],
            strides=[stride] * 2,
            pads=[pad] * 4,
            ceil_mode=int(ceil),
        )

    def add(self, a: str, b: str, name: str, act: str | None = None) -> str:
        return self.act(self._node("Add", [a, b], name, self.channels[a]), act)

    def concat(self, xs: list[str], name: str) -> str:
        return self._node("Concat", xs, name, sum(self.channels[x] for x in xs), axis=1)

    def head(self, x: str, fc: bool = True) -> str:
        """Global average pool, (flatten + fc), softmax."""
        c = self.channels[x]
        y = self._node("GlobalAveragePool", [x], "pool", c)
        if fc:
            flat = self._node("Flatten", [y], "flatten", c, axis=1)
            w, b = self._weight("fc.weight", (CLASSES, c)), self._weight("fc.bias", (CLASSES,))
            y = self._node("Gemm", [flat, w, b], "fc", CLASSES, transB=1)
        else:
            y = self._node("Flatten", [y], "flatten", c, axis=1)
        return self._node("Softmax", [y], "prob", CLASSES, axis=1)

    def model(self, output: str):
        onnx, helper = self.onnx, self.onnx.helper
        out = helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, [1, CLASSES])
        graph = helper.make_graph(self.nodes, self.name, self.inputs, [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ofa-deploy")
        model.ir_version = 8
        return model


# ---------------------------------------------------------------------- ResNets


def resnet50(caffe: bool = True, weights: str = "inputs"):
    """ResNet-50 v1 (zoo ``cf_resnet50``, 7.7 GOPs).

    ``caffe=True``: the original Caffe model of He et al. (``res3a_branch2a`` etc.): a downsampling
    bottleneck strides its first 1x1 conv (and the 1x1 projection). ``caffe=False``: the stride on the
    3x3 conv instead ("ResNet v1.5", torchvision's resnet50): 8.2 GOPs. Neither is the zoo's
    ``tf_resnetv1_50`` (6.97 GOPs): TF-slim downsamples in the *last* unit of a stage, see
    :func:`resnet50_tf_slim`.
    """
    net = _Net("resnet50" if caffe else "resnet50_v1.5", 224, weights)
    x = net.conv("input", "conv1", 64, 7, stride=2)
    x = net.maxpool(x, "pool1", 3, 2, ceil=True)  # Caffe rounds pooling up: 112 -> 56
    for stage, (width, units) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=2):
        for unit in range(units):
            prefix = f"res{stage}{chr(ord('a') + unit)}"
            stride = 2 if unit == 0 and stage > 2 else 1
            shortcut = x
            if unit == 0:
                shortcut = net.conv(x, f"{prefix}_branch1", 4 * width, 1, stride=stride, act=None)
            y = net.conv(x, f"{prefix}_branch2a", width, 1, stride=stride if caffe else 1)
            y = net.conv(y, f"{prefix}_branch2b", width, 3, stride=1 if caffe else stride)
            y = net.conv(y, f"{prefix}_branch2c", 4 * width, 1, act=None)
            x = net.add(y, shortcut, prefix, act="relu")
    return net.model(net.head(x))


def resnet50_tf_slim(weights: str = "inputs"):
    """TF-slim ``resnet_v1_50`` (zoo ``tf_resnetv1_50``, 6.97 GOPs).

    The stride sits on the 3x3 conv of the *last* unit of blocks 1-3 (block 4 keeps 7x7), so more
    units run at the lower resolution; an identity shortcut that downsamples is a 1x1 max-pool.
    """
    net = _Net("resnet_v1_50", 224, weights)
    x = net.conv("input", "conv1", 64, 7, stride=2)
    x = net.maxpool(x, "pool1", 3, 2, pad=1)
    for block, (width, units, block_stride) in enumerate(((64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1)), 1):
        for unit in range(units):
            prefix = f"block{block}/unit_{unit + 1}"
            stride = block_stride if unit == units - 1 else 1
            if net.channels[x] == 4 * width:
                shortcut = x if stride == 1 else net.maxpool(x, f"{prefix}/shortcut", 1, stride)
            else:
                shortcut = net.conv(x, f"{prefix}/shortcut", 4 * width, 1, stride=stride, act=None)
            y = net.conv(x, f"{prefix}/conv1", width, 1)
            y = net.conv(y, f"{prefix}/conv2", width, 3, stride=stride)
            y = net.conv(y, f"{prefix}/conv3", 4 * width, 1, act=None)
            x = net.add(y, shortcut, prefix, act="relu")
    return net.model(net.head(x))


def resnet18(weights: str = "inputs"):
    """ResNet-18 (zoo ``cf_resnet18``, 3.65 GOPs): basic blocks, stride on the first 3x3 of a stage."""
    net = _Net("resnet18", 224, weights)
    x = net.conv("input", "conv1", 64, 7, stride=2)
    x = net.maxpool(x, "pool1", 3, 2, ceil=True)
    for stage, width in enumerate((64, 128, 256, 512), start=2):
        for unit in range(2):
            prefix = f"res{stage}{chr(ord('a') + unit)}"
            stride = 2 if unit == 0 and stage > 2 else 1
            shortcut = x
            if net.channels[x] != width or stride != 1:
                shortcut = net.conv(x, f"{prefix}_branch1", width, 1, stride=stride, act=None)
            y = net.conv(x, f"{prefix}_branch2a", width, 3, stride=stride)
            y = net.conv(y, f"{prefix}_branch2b", width, 3, act=None)
            x = net.add(y, shortcut, prefix, act="relu")
    return net.model(net.head(x))


# ---------------------------------------------------------------------- MobileNets


def mobilenet_v1(width: float = 1.0, weights: str = "inputs"):
    """MobileNet v1 (zoo ``tf_mobilenetv1_1.0``, 1.14 GOPs): TF-slim, ReLU6, channels max(int(c*width), 8)."""
    net = _Net(f"mobilenet_v1_{width}", 224, weights)

    def depth(c: int) -> int:
        return max(int(c * width), 8)

    x = net.conv("input", "Conv2d_0", depth(32), 3, stride=2, act="relu6")
    layers = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (c, stride) in enumerate(layers, start=1):
        c_in = net.channels[x]
        x = net.conv(x, f"Conv2d_{i}_depthwise", c_in, 3, stride=stride, groups=c_in, act="relu6")
        x = net.conv(x, f"Conv2d_{i}_pointwise", depth(c), 1, act="relu6")
    return net.model(net.head(x))


# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 paper's table 2
_MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(width: float = 1.0, weights: str = "inputs"):
    """MobileNet v2 (zoo ``cf_mobilenetv2``/``tf_mobilenetv2_1.0``: 0.59 GOPs; ``tf_mobilenetv2_1.4``: 1.17).

    As the TF-slim reference: ReLU6, every channel count ``make_divisible(c * width, 8)`` (expansions
    ``make_divisible(c_in * t, 8)``), the t=1 first block without an expansion conv, and the last
    1x1 conv 1280 scaled up (never down) with the width: 1792 at 1.4. (The Caffe model the zoo
    converted may use plain ReLU, which changes no MAC.)
    """
    net = _Net(f"mobilenet_v2_{width}", 224, weights)
    x = net.conv("input", "conv1", make_divisible(32 * width), 3, stride=2, act="relu6")
    block = 0
    for t, c, n, s in _MOBILENET_V2:
        out = make_divisible(c * width)
        for i in range(n):
            block += 1
            prefix, stride, c_in = f"block{block}", s if i == 0 else 1, net.channels[x]
            mid = make_divisible(c_in * t)
            y = x if t == 1 else net.conv(x, f"{prefix}/expand", mid, 1, act="relu6")
            y = net.conv(y, f"{prefix}/depthwise", mid, 3, stride=stride, groups=mid, act="relu6")
            y = net.conv(y, f"{prefix}/project", out, 1, act=None)
            x = net.add(y, x, f"{prefix}/add") if stride == 1 and c_in == out else y
    x = net.conv(x, "conv_last", make_divisible(1280 * max(1.0, width)), 1, act="relu6")
    return net.model(net.head(x))


# ---------------------------------------------------------------------- SqueezeNet


def squeezenet(version: str = "1.1", weights: str = "inputs"):
    """SqueezeNet (zoo ``cf_squeeze``, 0.76 GOPs at 227x227), as the DeepScale Caffe deploy models.

    ``version="1.1"`` (default): conv1 3x3/2 with 64 channels, max-pools after conv1, fire3 and
    fire5: 0.78 GOPs, the zoo's figure. ``"1.0"``: conv1 7x7/2 with 96 channels, pools after conv1,
    fire4 and fire8, conv10 padded to 15x15: 1.7 GOPs, far from it. Convs have biases and no BN;
    Caffe pooling rounds up (``ceil_mode``); conv10 (1x1, 1000 channels, ReLU) replaces the fc.
    """
    if version not in ("1.0", "1.1"):
        raise ValueError(f"SqueezeNet version must be '1.0' or '1.1', not {version!r}")
    net = _Net(f"squeezenet_v{version}", 227, weights)
    fires = {  # fire index: (squeeze, expand) channels
        2: (16, 64),
        3: (16, 64),
        4: (32, 128),
        5: (32, 128),
        6: (48, 192),
        7: (48, 192),
        8: (64, 256),
        9: (64, 256),
    }
    if version == "1.0":
        x = net.conv("input", "conv1", 96, 7, stride=2, pad=0, bn=False)
        pools_after = (4, 8)
    else:
        x = net.conv("input", "conv1", 64, 3, stride=2, pad=0, bn=False)
        pools_after = (3, 5)
    x = net.maxpool(x, "pool1", 3, 2, ceil=True)
    for fire, (squeeze, expand) in fires.items():
        s = net.conv(x, f"fire{fire}/squeeze1x1", squeeze, 1, bn=False)
        e1 = net.conv(s, f"fire{fire}/expand1x1", expand, 1, bn=False)
        e3 = net.conv(s, f"fire{fire}/expand3x3", expand, 3, bn=False)
        x = net.concat([e1, e3], f"fire{fire}/concat")
        if fire in pools_after:
            x = net.maxpool(x, f"pool{fire}", 3, 2, ceil=True)
    x = net.conv(x, "conv10", CLASSES, 1, pad=1 if version == "1.0" else 0, bn=False)
    return net.model(net.head(x, fc=False))


# ---------------------------------------------------------------------- the zoo


def reference_models() -> dict[str, Callable[..., object]]:
    """Zoo model name -> builder (each takes ``weights=``), for the models of the published tables."""
    return {
        "cf_resnet50": resnet50,
        "cf_resnet18": resnet18,
        "tf_mobilenetv1": mobilenet_v1,
        "cf_mobilenetv2": mobilenet_v2,
        "tf_mobilenetv2": lambda weights="inputs": mobilenet_v2(1.4, weights=weights),
        "cf_squeeze": squeezenet,
    }
