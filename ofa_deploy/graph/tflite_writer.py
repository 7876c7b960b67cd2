"""Graph -> TFLite flatbuffer (float32, NHWC), written with the schema bindings of ai-edge-litert.

Why not a converter: the graph is a handful of TFLite builtins (CONV_2D, DEPTHWISE_CONV_2D,
HARD_SWISH, MEAN, ADD, MUL, PAD, RESHAPE, FULLY_CONNECTED), so writing the flatbuffer directly
takes milliseconds per operator model, needs no 1.2 GB converter stack, and keeps per-op models
and whole networks identical op for op. Strided convolutions get an explicit PAD and VALID padding
so the numerics match PyTorch's symmetric padding (TFLite's SAME pads bottom/right only).
The model input is NHWC ``(1, r, r, 3)``; the output is ``(1, 1000)``.
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


class _Writer:
    def __init__(self, schema) -> None:
        self.s = schema
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
    def tensor(self, name: str, shape: tuple[int, ...], data: np.ndarray | None = None, dtype: str = "float32") -> int:
        s = self.s
        t = s.TensorT()
        t.name = name
        t.shape = list(shape)
        t.type = s.TensorType.INT32 if dtype == "int32" else s.TensorType.FLOAT32
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
            padded = self.tensor(f"{name}_padded", (n, h + 2 * p, w + 2 * p, c))
            self.op(s.BuiltinOperator.PAD, [src, pads], [padded], s.BuiltinOptions.PadOptions, s.PadOptionsT())
            src, padding = padded, s.Padding.VALID
        out_hw = (h - 1) // stride + 1
        out = self.tensor(name, (n, out_hw, out_hw, out_c))
        b = self.const(f"{name}_bias", bias if bias is not None else np.zeros(out_c, np.float32))
        if groups == 1:
            wt = self.const(f"{name}_weight", weight.transpose(0, 2, 3, 1))  # OHWI
            opts = s.Conv2DOptionsT()
            opts.padding, opts.strideH, opts.strideW, opts.fusedActivationFunction = padding, stride, stride, fused
            opts.dilationHFactor = opts.dilationWFactor = 1
            self.op(s.BuiltinOperator.CONV_2D, [src, wt, b], [out], s.BuiltinOptions.Conv2DOptions, opts)
        else:
            wt = self.const(f"{name}_weight", weight.transpose(1, 2, 3, 0))  # 1HWC
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


def to_tflite_bytes(graph: Graph) -> bytes:
    """The graph as a TFLite flatbuffer (float32, NHWC input), op for op."""
    flatbuffers, s = _schema()
    wr = _Writer(s)
    n, c, h, w = graph.input_shape
    wr.tensor(graph.input_name, (n, h, w, c))
    act = s.ActivationFunctionType
    alias: dict[str, str] = {}  # graph tensor -> writer tensor holding it
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
            wr.add(wr.tensors[e], wr.const(p + "_three", np.array([3.0])), gate, fused=act.RELU6)
            scaled = wr.tensor(p + "_xgate", wr.shapes[x])
            wr.mul(wr.tensors[x], gate, scaled)
            out = wr.tensor(p, wr.shapes[x])
            wr.mul(scaled, wr.const(p + "_sixth", np.array([1.0 / 6.0])), out)
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
            flat = wr.tensor(node.output + "_flat", (1, in_f))
            opts = s.ReshapeOptionsT()
            opts.newShape = [1, in_f]
            shape = wr.const(node.output + "_shape", np.array([1, in_f]), "int32")
            wr.op(s.BuiltinOperator.RESHAPE, [wr.tensors[x], shape], [flat], s.BuiltinOptions.ReshapeOptions, opts)
            out = wr.tensor(node.output, (1, node.weight.shape[0]))
            fc = s.FullyConnectedOptionsT()
            fc.fusedActivationFunction = act.NONE
            wt, b = wr.const(node.output + "_weight", node.weight), wr.const(node.output + "_bias", node.bias)
            wr.op(s.BuiltinOperator.FULLY_CONNECTED, [flat, wt, b], [out], s.BuiltinOptions.FullyConnectedOptions, fc)
            alias[node.output] = node.output
        else:
            raise TypeError(f"unknown node {type(node).__name__}")

    wr.sub.inputs = [wr.tensors[graph.input_name]]
    wr.sub.outputs = [wr.tensors[name_of(graph.output_name)]]
    wr.model.subgraphs = [wr.sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(wr.model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
