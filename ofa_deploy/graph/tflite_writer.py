"""Graph -> TFLite flatbuffer (float32, NHWC), written with the schema bindings of ai-edge-litert.

Why not a converter: the graph is a handful of TFLite builtins (CONV_2D, DEPTHWISE_CONV_2D,
HARD_SWISH, MEAN, ADD, MUL, PAD, RESHAPE, FULLY_CONNECTED), so writing the flatbuffer directly
takes milliseconds per operator model, needs no 1.2 GB converter stack, and keeps per-op models
and whole networks identical op for op. Strided convolutions get an explicit PAD and VALID padding
so the numerics match PyTorch's symmetric padding (TFLite's SAME pads bottom/right only).
The model input is NHWC ``(1, r, r, 3)``; the output is ``(1, 1000)``.

Given the range of every tensor (:func:`to_tflite_bytes`'s ``ranges``, from a calibration run of the
float model: :mod:`ofa_deploy.graph.tflite_quantize`), the same graph is written full-integer, as
the TFLite converter's int8 scheme has it: activations int8 with one scale and zero point per
tensor, convolution and depthwise weights int8 symmetric per output channel, fully-connected
weights int8 per tensor, biases int32 at the input scale times the weight scale; a QUANTIZE after
the float input and a DEQUANTIZE before the float output. PAD and RESHAPE keep their input's
quantization, as the kernels require.
"""

from __future__ import annotations

import numpy as np

from ofa_deploy.errors import RuntimeMissingError
from ofa_deploy.graph.ir import Add, Conv, GlobalAvgPool, Graph, Linear, SqueezeExcite


def _schema():
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise RuntimeMissingError(
            "writing .tflite needs ai-edge-litert and flatbuffers: pip install 'ofa-deploy[tflite]'"
        ) from None
    return flatbuffers, schema


Ranges = dict[str, tuple[float, float]]  # tensor name -> (min, max) seen in calibration
INT8_MIN, INT8_MAX = -128, 127
MIN_SCALE = 1e-7  # a tensor that calibrated to (almost) one value still gets a usable scale


def activation_quantization(low: float, high: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [low, high] and zero."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max((high - low) / (INT8_MAX - INT8_MIN), MIN_SCALE)
    zero_point = int(np.clip(round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX))
    return scale, zero_point


def _symmetric(array: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and scales of ``array``, one scale per index of ``axis`` (None: one for all)."""
    if axis is None:
        scales = np.array([np.abs(array).max() / INT8_MAX], np.float32)
        shaped = scales.reshape((1,) * array.ndim)
    else:
        other = tuple(i for i in range(array.ndim) if i != axis)
        scales = (np.abs(array).max(axis=other) / INT8_MAX).astype(np.float32)
        shape = [1] * array.ndim
        shape[axis] = -1
        shaped = scales.reshape(shape)
    scales = np.where(scales > 0, scales, np.float32(1.0))
    shaped = np.where(shaped > 0, shaped, np.float32(1.0))
    return np.clip(np.round(array / shaped), -INT8_MAX, INT8_MAX).astype(np.int8), scales


class _Writer:
    def __init__(self, schema, ranges: Ranges | None = None) -> None:
        self.s = schema
        self.ranges = ranges  # None: float32; else int8 with these activation ranges
        self.quant: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # name -> scales, zero points, axis
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.description = "ofa-deploy"
        self.model.operatorCodes = []
        self.model.buffers = [schema.BufferT()]  # buffer 0: the empty sentinel
        self.sub = schema.SubGraphT()
        self.sub.tensors, self.sub.operators = [], []
        self.sub.name = "main"
        self.tensors: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.codes: dict[int, int] = {}

    # -------------------------------------------------------------- tensors
    def tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        data: np.ndarray | None = None,
        dtype: str = "float32",
        quantization: tuple[np.ndarray, np.ndarray, int] | None = None,
        like: str | None = None,
        keep_float: bool = False,
    ) -> int:
        """A tensor; in an int8 model an activation (no ``data``, ``dtype`` float32) becomes int8 with the
        quantization of its calibrated range, or of tensor ``like`` (PAD and RESHAPE keep their input's),
        unless ``keep_float`` (the model's float input and output)."""
        s = self.s
        t = s.TensorT()
        t.name = name
        t.shape = list(shape)
        if self.ranges is not None and data is None and dtype == "float32" and not keep_float:
            dtype = "int8"
            if quantization is None:
                if like is not None:
                    quantization = self.quant[like]
                else:
                    scale, zero_point = activation_quantization(*self.ranges[name])
                    quantization = (np.array([scale], np.float32), np.array([zero_point], np.int64), 0)
        t.type = {"int32": s.TensorType.INT32, "int8": s.TensorType.INT8}.get(dtype, s.TensorType.FLOAT32)
        if quantization is not None:
            q = s.QuantizationParametersT()
            q.scale = [float(v) for v in quantization[0]]
            q.zeroPoint = [int(v) for v in quantization[1]]
            q.quantizedDimension = quantization[2]
            t.quantization = q
            self.quant[name] = quantization
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.sub.tensors.append(t)
        index = len(self.sub.tensors) - 1
        self.tensors[name], self.shapes[name] = index, tuple(shape)
        return index

    def const(self, name: str, array: np.ndarray, dtype: str = "float32") -> int:
        array = np.asarray(array, dtype=np.int32 if dtype == "int32" else np.float32)
        return self.tensor(name, array.shape, array, dtype)

    def weight(self, name: str, array: np.ndarray, axis: int | None) -> int:
        """A weight tensor: float32, or int8 symmetric per index of ``axis`` (None: per tensor)."""
        if self.ranges is None:
            return self.const(name, array)
        values, scales = _symmetric(np.asarray(array, np.float32), axis)
        zeros = np.zeros(len(scales), np.int64)
        return self.tensor(name, values.shape, values, "int8", (scales, zeros, axis or 0))

    def bias(self, name: str, array: np.ndarray, x: str, weight: int) -> int:
        """A bias: float32, or int32 at scale (input scale x weight scale), per channel like the weight."""
        if self.ranges is None:
            return self.const(name, array)
        w_scales = np.asarray(self.sub.tensors[weight].quantization.scale, np.float64)
        scales = (self.quant[x][0][0] * w_scales).astype(np.float32)
        scales = np.broadcast_to(scales, np.shape(array)).copy() if scales.size == 1 else scales
        limit = np.iinfo(np.int32)
        values = np.clip(np.round(np.asarray(array, np.float64) / scales), limit.min, limit.max).astype(np.int32)
        zeros = np.zeros(len(scales), np.int64)
        return self.tensor(name, values.shape, values, "int32", (scales, zeros, 0))

    def scalar(self, name: str, value: float) -> int:
        """A float constant operand (the squeeze-excite's 3 and 1/6): int8 with its own scale in an int8 model."""
        if self.ranges is None:
            return self.const(name, np.array([value]))
        scale = abs(value) / INT8_MAX
        values = np.array([INT8_MAX if value > 0 else -INT8_MAX], np.int8)
        return self.tensor(name, (1,), values, "int8", (np.array([scale], np.float32), np.zeros(1, np.int64), 0))

    # -------------------------------------------------------------- operators
    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        s = self.s
        if code not in self.codes:
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.model.operatorCodes.append(oc)
            self.codes[code] = len(self.model.operatorCodes) - 1
        o = s.OperatorT()
        o.opcodeIndex = self.codes[code]
        o.inputs, o.outputs = inputs, outputs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        self.sub.operators.append(o)

    def add(self, a: int, b: int, out: int, fused: int = 0) -> None:
        opts = self.s.AddOptionsT()
        opts.fusedActivationFunction = fused
        self.op(self.s.BuiltinOperator.ADD, [a, b], [out], self.s.BuiltinOptions.AddOptions, opts)

    def mul(self, a: int, b: int, out: int) -> None:
        opts = self.s.MulOptionsT()
        self.op(self.s.BuiltinOperator.MUL, [a, b], [out], self.s.BuiltinOptions.MulOptions, opts)

    def mean(self, x: int, out: int) -> None:
        opts = self.s.ReducerOptionsT()
        opts.keepDims = True
        axes = self.const(f"axes_{out}", np.array([1, 2]), "int32")
        self.op(self.s.BuiltinOperator.MEAN, [x, axes], [out], self.s.BuiltinOptions.ReducerOptions, opts)

    def conv(
        self, name: str, x: str, weight: np.ndarray, bias: np.ndarray | None, stride: int, groups: int, fused: int
    ) -> str:
        """CONV_2D or DEPTHWISE_CONV_2D on NHWC ``x``; returns the output tensor name."""
        s = self.s
        n, h, w, c = self.shapes[x]
        out_c, _, k, _ = weight.shape
        src = self.tensors[x]
        padding = s.Padding.SAME
        if stride > 1 and k > 1:
            p = k // 2
            pads = self.const(f"{name}_pads", np.array([[0, 0], [p, p], [p, p], [0, 0]]), "int32")
            padded = self.tensor(f"{name}_padded", (n, h + 2 * p, w + 2 * p, c), like=x)
            self.op(s.BuiltinOperator.PAD, [src, pads], [padded], s.BuiltinOptions.PadOptions, s.PadOptionsT())
            src, padding = padded, s.Padding.VALID
        out_hw = (h - 1) // stride + 1
        out = self.tensor(name, (n, out_hw, out_hw, out_c))
        zero = np.zeros(out_c, np.float32)
        if groups == 1:
            wt = self.weight(f"{name}_weight", weight.transpose(0, 2, 3, 1), 0)  # OHWI, per output channel
            b = self.bias(f"{name}_bias", bias if bias is not None else zero, x, wt)
            opts = s.Conv2DOptionsT()
            opts.padding, opts.strideH, opts.strideW, opts.fusedActivationFunction = padding, stride, stride, fused
            opts.dilationHFactor = opts.dilationWFactor = 1
            self.op(s.BuiltinOperator.CONV_2D, [src, wt, b], [out], s.BuiltinOptions.Conv2DOptions, opts)
        else:
            wt = self.weight(f"{name}_weight", weight.transpose(1, 2, 3, 0), 3)  # 1HWC, per channel (axis 3)
            b = self.bias(f"{name}_bias", bias if bias is not None else zero, x, wt)
            opts = s.DepthwiseConv2DOptionsT()
            opts.padding, opts.strideH, opts.strideW, opts.fusedActivationFunction = padding, stride, stride, fused
            opts.depthMultiplier, opts.dilationHFactor, opts.dilationWFactor = 1, 1, 1
            self.op(
                s.BuiltinOperator.DEPTHWISE_CONV_2D, [src, wt, b], [out], s.BuiltinOptions.DepthwiseConv2DOptions, opts
            )
        return name

    def hard_swish(self, x: str, name: str) -> str:
        out = self.tensor(name, self.shapes[x])
        self.op(self.s.BuiltinOperator.HARD_SWISH, [self.tensors[x]], [out])
        return name


def to_tflite_bytes(graph: Graph, ranges: Ranges | None = None) -> bytes:
    """The graph as a TFLite flatbuffer (NHWC input), op for op: float32, or full-integer int8 with
    float input and output when ``ranges`` (every activation tensor's calibrated range) is given."""
    flatbuffers, s = _schema()
    wr = _Writer(s, ranges)
    n, c, h, w = graph.input_shape
    alias: dict[str, str] = {}  # graph tensor -> writer tensor holding it
    if ranges is None:
        wr.tensor(graph.input_name, (n, h, w, c))
    else:  # float in, QUANTIZE to int8
        wr.tensor(graph.input_name, (n, h, w, c), keep_float=True)
        quantized = wr.tensor(graph.input_name + "_int8", (n, h, w, c), quantization=_input_quantization(ranges, graph))
        wr.op(s.BuiltinOperator.QUANTIZE, [wr.tensors[graph.input_name]], [quantized])
        alias[graph.input_name] = graph.input_name + "_int8"
    act = s.ActivationFunctionType
    name_of = lambda t: alias.get(t, t)  # noqa: E731

    for node in graph.nodes:
        if isinstance(node, Conv):
            fused = act.RELU if node.act == "relu" else act.NONE
            target = node.output + ("_pre" if node.act == "h_swish" else "")
            y = wr.conv(target, name_of(node.input), node.weight, node.bias, node.stride, node.groups, fused)
            if node.act == "h_swish":
                y = wr.hard_swish(y, node.output)
            alias[node.output] = y
        elif isinstance(node, SqueezeExcite):
            x, p = name_of(node.input), node.output
            pooled = wr.tensor(p + "_pool", (1, 1, 1, wr.shapes[x][3]))
            wr.mean(wr.tensors[x], pooled)
            r = wr.conv(p + "_reduce", p + "_pool", node.reduce_weight, node.reduce_bias, 1, 1, act.RELU)
            e = wr.conv(p + "_expand", r, node.expand_weight, node.expand_bias, 1, 1, act.NONE)
            gate = wr.tensor(p + "_gate6", wr.shapes[e])
            wr.add(wr.tensors[e], wr.scalar(p + "_three", 3.0), gate, fused=act.RELU6)
            scaled = wr.tensor(p + "_xgate", wr.shapes[x])
            wr.mul(wr.tensors[x], gate, scaled)
            out = wr.tensor(p, wr.shapes[x])
            wr.mul(scaled, wr.scalar(p + "_sixth", 1.0 / 6.0), out)
            alias[node.output] = p
        elif isinstance(node, Add):
            a, b = name_of(node.a), name_of(node.b)
            out = wr.tensor(node.output, wr.shapes[a])
            wr.add(wr.tensors[a], wr.tensors[b], out)
            alias[node.output] = node.output
        elif isinstance(node, GlobalAvgPool):
            x = name_of(node.input)
            out = wr.tensor(node.output, (1, 1, 1, wr.shapes[x][3]))
            wr.mean(wr.tensors[x], out)
            alias[node.output] = node.output
        elif isinstance(node, Linear):
            x = name_of(node.input)
            in_f = node.weight.shape[1]
            flat = wr.tensor(node.output + "_flat", (1, in_f), like=x)
            opts = s.ReshapeOptionsT()
            opts.newShape = [1, in_f]
            shape = wr.const(node.output + "_shape", np.array([1, in_f]), "int32")
            wr.op(s.BuiltinOperator.RESHAPE, [wr.tensors[x], shape], [flat], s.BuiltinOptions.ReshapeOptions, opts)
            out = wr.tensor(node.output, (1, node.weight.shape[0]))
            fc = s.FullyConnectedOptionsT()
            fc.fusedActivationFunction = act.NONE
            wt = wr.weight(node.output + "_weight", node.weight, None)
            b = wr.bias(node.output + "_bias", node.bias, node.output + "_flat", wt)
            wr.op(s.BuiltinOperator.FULLY_CONNECTED, [flat, wt, b], [out], s.BuiltinOptions.FullyConnectedOptions, fc)
            alias[node.output] = node.output
        else:
            raise TypeError(f"unknown node {type(node).__name__}")

    output = name_of(graph.output_name)
    if ranges is not None:  # int8 to float: DEQUANTIZE
        wr.tensor(output + "_float", wr.shapes[output], keep_float=True)
        wr.op(s.BuiltinOperator.DEQUANTIZE, [wr.tensors[output]], [wr.tensors[output + "_float"]])
        output += "_float"
    wr.sub.inputs = [wr.tensors[graph.input_name]]
    wr.sub.outputs = [wr.tensors[output]]
    wr.model.subgraphs = [wr.sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(wr.model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _input_quantization(ranges: Ranges, graph: Graph) -> tuple[np.ndarray, np.ndarray, int]:
    scale, zero_point = activation_quantization(*ranges[graph.input_name])
    return np.array([scale], np.float32), np.array([zero_point], np.int64), 0
