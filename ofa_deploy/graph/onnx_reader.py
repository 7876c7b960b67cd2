"""Any ONNX CNN at batch 1 as the flat layer list of :mod:`ofa_deploy.graph.layers`.

:func:`layers_from_onnx` reads a model (a path, its bytes or an ``onnx.ModelProto``), runs ONNX shape
inference to learn every tensor's shape, and turns each operator on the data path into one
:class:`~ofa_deploy.graph.layers.Layer`. The rules, in short:

* **Feature maps and constants.** The data inputs are the graph inputs that are neither initializers
  nor consumed as a weight (Conv/ConvTranspose weight and bias, Gemm B and C, the 2-D right operand of
  MatMul, BatchNormalization's four parameters, PRelu's slope): a model may declare its weights as
  graph inputs without data. A tensor is a feature map when it depends on a data input; everything
  else is a constant. Nodes that read no feature map (weight dequantisation, shape arithmetic,
  ``Constant``) are constant folding and give no layer, and neither do ``Shape``/``Size`` (they read
  metadata only). Every other node on the data path gives exactly one layer, or is folded into the
  layer before it as listed below: nothing on the data path is dropped silently.
* **Batch.** A dynamic batch dimension of a data input is taken as 1; a batch above 1, or another
  dynamic dimension, is a :class:`~ofa_deploy.errors.BadInputError`.
* **Shapes** are (C, H, W) without the batch; a rank-2 (N, C) tensor is (C, 1, 1), rank 3
  (N, C, L) is (C, L, 1) and higher ranks fold the middle spatial dimensions into H.
* **Convolutions.** ``Conv`` is ``depthwise`` when ``group`` equals the input channels (and is above
  1), ``grouped_conv`` for another ``group`` above 1, else ``conv``; kernel and groups come from the
  weight's shape and attributes, the stride is the first of ``strides``; ``params`` = weight + bias
  elements. ``ConvTranspose`` is a ``conv`` (``source_op`` says so) whose MACs, computed from the
  output like any conv, count the conv over the zero-upsampled input that a conv engine executes.
  ``Gemm`` and ``MatMul`` with a constant 2-D right operand are ``fc`` (a MatMul over a rank-3/4
  input is applied at every position: the last axis is the channel axis). A MatMul of two feature
  maps is ``other``.
* **Folded, no layer of their own:** ``BatchNormalization`` directly after a conv/fc (the only reader
  of its output; a conv without bias gains the folded bias in ``params``); an ``Add`` of a constant
  per-channel vector (as many elements as output channels) directly after a conv/fc: a bias, added to
  ``params``; a constant-mode ``Pad`` whose only reader is a Conv, ConvTranspose, MaxPool or
  AveragePool (that layer's ``in_shape`` is then the unpadded input).
* **Elementwise.** ``Add``/``Sum``/``Sub`` of several feature maps are ``add`` with ``inputs`` = the
  number of feature maps; ``Mul`` of two feature maps is ``mul`` (inputs 2). An ``Add``, ``Sub``,
  ``Mul`` or ``Div`` of one feature map and constants is a per-element scale or shift: ``mul`` with
  ``inputs=1`` and ``params`` = the constants' elements (``source_op`` keeps the real op). A
  ``BatchNormalization`` that cannot be folded is the same (``params`` = 2 x channels: scale and
  shift). Elementwise layers have ``in_shape`` = ``out_shape`` (the broadcast result). ``Div`` of two
  feature maps is ``other``.
* **Pooling.** ``MaxPool``/``AveragePool`` (kernel, stride); ``GlobalAveragePool``,
  ``GlobalMaxPool``, and ``ReduceMean``/``ReduceMax`` over exactly H and W are ``globalpool`` (kernel
  = (H, W)).
* ``Concat`` is ``concat`` (``inputs`` = feature maps concatenated, ``in_shape`` = the first).
* **Activations:** Relu, LeakyRelu, Sigmoid, HardSigmoid, HardSwish; ``Clip`` with min 0 and max 6
  is ``relu6``, min 0 and no max ``relu``, any other bounds ``other``. A hard-swish written out as
  ``x * relu6(x + 3) / 6`` stays as its parts (mul-like shift, relu6, mul, mul-like scale).
* **No-ops** are kept as ``reshape`` layers (free for a cost model, but visible in reports):
  Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout, QuantizeLinear/DequantizeLinear on the
  data path (what an int8 deployment does anyway), and a Transpose that only moves size-1 axes.
* Everything else (Softmax, Resize, Pad that cannot be folded, a real Transpose, custom-domain ops,
  control flow...) is ``other`` with ``source_op`` = the ONNX op type. An op whose output shape ONNX
  cannot infer (a custom op) is assumed to keep the shape of its first feature-map input.

Weights are never read, and external data never: a model is parsed from its file's bytes alone (a
regular file, within a size limit), inference runs on a copy whose large initializers, and Constant
values kept in an external file, are replaced by graph inputs of the same shape, and any other tensor
with external data is refused. So a model with zero or random weights, or with weights declared as
inputs, gives the same list, fast. Shapes come from one ONNX inference over the graph plus one pass
in graph order (linear time, however many custom ops). A tensor dimension above ``MAX_DIM``, a tensor
above ``MAX_ELEMENTS`` elements or a kernel or stride above ``MAX_KERNEL`` is refused (exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.layers import Layer, LayerKind, Shape
from ofa_deploy.graph.onnx_module import onnx_module
from ofa_deploy.inputs import MODEL_FILE_LIMIT, read_input_bytes

__all__ = ["layers_from_onnx"]

# Input positions that hold weights (not feature maps), per op type.
_WEIGHT_INPUTS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "BatchNormalization": (1, 2, 3, 4),
    "PRelu": (1,),
}
MAX_DIM = 1 << 20  # one tensor dimension (a 1M-pixel side, or 1M channels)
MAX_ELEMENTS = 1 << 31  # one tensor at batch 1 (8 GiB of float32)
MAX_KERNEL = 1 << 16  # kernel elements and stride of one layer
_SMALL = 64  # initializers up to this many elements keep their data for shape inference (shapes, bounds)
_NOOPS = {
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "QuantizeLinear",
    "DequantizeLinear",
}
_ACTIVATIONS = {
    "Relu": LayerKind.RELU,
    "LeakyRelu": LayerKind.LEAKYRELU,
    "Sigmoid": LayerKind.SIGMOID,
    "HardSigmoid": LayerKind.HARDSIGMOID,
    "HardSwish": LayerKind.HARDSWISH,
}
_FOLD_PAD_INTO = {"Conv", "ConvTranspose", "MaxPool", "AveragePool"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0].strip() if text else type(error).__name__


# ---------------------------------------------------------------------- loading


def _load(model: Any, source: str | None) -> tuple[Any, str]:
    onnx = onnx_module()
    if isinstance(model, onnx.ModelProto):
        return model, source or model.graph.name or "<onnx model>"
    if isinstance(model, bytes | bytearray | memoryview):
        source = source or "<onnx bytes>"
        try:
            return onnx.load_model_from_string(bytes(model)), source
        except Exception as e:  # protobuf's DecodeError and friends
            raise BadInputError(f"{source}: not a readable ONNX model ({_first_line(e)})") from None
    if isinstance(model, str | Path):
        path = Path(model)
        source = source or str(path)
        data = read_input_bytes(path, "ONNX file", MODEL_FILE_LIMIT)  # a regular file within the limit
        try:  # from bytes: external data is never looked for
            return onnx.load_model_from_string(data), source
        except Exception as e:
            raise BadInputError(f"{source}: not a readable ONNX model ({_first_line(e)})") from None
    raise TypeError(f"expected a path, bytes or onnx.ModelProto, not {type(model).__name__}")


def _external_tensors(graph, top: bool) -> Iterator[str]:
    """Names of the tensors whose data is in an external file, except the top graph's initializers and
    Constant values (the reader uses their shapes only), in subgraphs too."""
    external = onnx_module().TensorProto.EXTERNAL
    if not top:
        yield from (t.name for t in graph.initializer if t.data_location == external)
    for sparse in graph.sparse_initializer:
        if external in (sparse.values.data_location, sparse.indices.data_location):
            yield sparse.values.name
    for node in graph.node:
        for attr in node.attribute:
            tensors = [*([attr.t] if attr.HasField("t") else []), *attr.tensors]
            for sparse in [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors]:
                tensors += [sparse.values, sparse.indices]
            shape_only = top and node.op_type == "Constant" and attr.name == "value"
            for t in tensors:
                if t.data_location == external and not shape_only:
                    yield t.name or node.name or node.op_type
            for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                yield from _external_tensors(sub, top=False)


def _numel(dims: Iterable[int]) -> int:
    return math.prod(int(d) for d in dims)


def _dims(value_info) -> tuple[int | None, ...] | None:
    """A value_info's shape, unknown dims as None; None when the rank is unknown."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.tensor_type.shape.dim)


# ---------------------------------------------------------------------- the model, prepared


class _Model:
    """The graph's constants, data inputs and tensor shapes (after shape inference at batch 1)."""

    def __init__(self, model, source: str) -> None:
        onnx = onnx_module()
        self.onnx, self.source = onnx, source
        graph = model.graph
        self.nodes = list(graph.node)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.init_dims = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
        external = onnx.TensorProto.EXTERNAL
        self.small = {t.name: t for t in graph.initializer if _numel(t.dims) <= _SMALL and t.data_location != external}
        self.external_constants: dict[str, Any] = {}  # Constant nodes whose data is in another file: shapes only
        for node in self.nodes:  # Constant nodes: values for Clip bounds, ReduceMean axes...
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value":
                        kept = self.external_constants if attr.t.data_location == external else self.small
                        kept[node.output[0]] = attr.t
        elsewhere = next(_external_tensors(graph, top=True), None)
        if elsewhere is not None:
            raise BadInputError(
                f"{source}: tensor '{elsewhere[:80]}' keeps its data in an external file; this reader never reads "
                "external data (only initializers and Constant values may be external: their shapes are used)"
            )
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}

        weights = set()
        for node in self.nodes:
            for i in _WEIGHT_INPUTS.get(node.op_type, ()):
                if i < len(node.input) and node.input[i]:
                    weights.add(node.input[i])
        declared = {i.name: _dims(i) for i in graph.input}
        for node in self.nodes:  # MatMul(x, W) with a 2-D W declared as a graph input: a weight
            if node.op_type == "MatMul" and len(node.input) == 2:
                w = declared.get(node.input[1])
                if w is not None and len(w) == 2 and node.input[0] not in self.init_dims:
                    weights.add(node.input[1])
        self.data_inputs = [i for i in graph.input if i.name not in self.init_dims and i.name not in weights]
        if not self.data_inputs:
            raise BadInputError(f"{source}: the model has no data input (every graph input is a weight)")
        self.shapes = self._infer(model)

    # -- shape inference on a light copy: large initializers become inputs, batch fixed to 1

    def _light_model(self, model):
        onnx, helper = self.onnx, self.onnx.helper
        graph = model.graph
        data = {i.name for i in self.data_inputs}
        inputs = []
        for value in graph.input:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(value)
            if value.name in data:
                self._fix_batch(copy)
            inputs.append(copy)
        known = {i.name for i in inputs}
        for t in graph.initializer:
            if t.name not in self.small and t.name not in known:
                inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        for name, t in self.external_constants.items():  # their shape, never their (external) data
            inputs.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        light_graph = helper.make_graph(
            [n for n in self.nodes if n.op_type != "Constant" or n.output[0] not in self.external_constants],
            graph.name or "graph",
            inputs,
            graph.output,
            [t for t in graph.initializer if t.name in self.small],
        )
        light_graph.sparse_initializer.extend(graph.sparse_initializer)
        light = helper.make_model(light_graph, opset_imports=list(model.opset_import))
        light.ir_version = model.ir_version
        light.functions.extend(model.functions)
        return light

    def _fix_batch(self, value) -> None:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            raise BadInputError(f"{self.source}: input '{value.name}' has no declared shape")
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            fixed = d.HasField("dim_value") and d.dim_value > 0
            if axis == 0:
                if fixed and d.dim_value > 1:
                    raise BadInputError(
                        f"{self.source}: input '{value.name}' has batch {d.dim_value}; export it with batch 1 "
                        "(or a dynamic batch)"
                    )
                d.Clear()
                d.dim_value = 1
            elif not fixed:
                name = d.dim_param or "?"
                raise BadInputError(
                    f"{self.source}: input '{value.name}' has a dynamic dimension '{name}' at axis {axis}; "
                    "export it with a fixed input size"
                )

    def _infer(self, model) -> dict[str, tuple[int | None, ...]]:
        """Every tensor's shape: one ONNX inference over the whole graph, then one pass in graph order
        that completes what it left unknown (downstream of an op ONNX cannot infer): linear time."""
        onnx = self.onnx
        light = self._light_model(model)
        try:
            onnx.checker.check_model(light)
        except Exception as e:  # ValidationError, or e.g. a UnicodeDecodeError: a name that is not UTF-8
            raise BadInputError(f"{self.source}: invalid ONNX model ({_first_line(e)})") from None
        for value in light.graph.output:  # declared output shapes may carry another batch: let inference decide
            if value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
        try:
            inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True, data_prop=True)
        except Exception:  # InferenceError, or a C++ error from a malformed node: leniently, unknowns completed below
            try:
                inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
            except Exception as e:
                raise BadInputError(f"{self.source}: ONNX shape inference failed ({_first_line(e)})") from None
        values = (*inferred.graph.input, *inferred.graph.value_info)
        shapes = {v.name: _dims(v) for v in values}
        shapes.update({v.name: _dims(v) for v in inferred.graph.output if _dims(v)})
        shapes.update({name: dims for name, dims in self.init_dims.items()})
        self.elem_types = {v.name: v.type.tensor_type.elem_type for v in (*values, *inferred.graph.output)}
        self._complete_shapes(shapes)
        for name, dims in shapes.items():
            if dims is not None:
                self._check_dims(name, dims)
        return shapes

    def _complete_shapes(self, shapes: dict[str, tuple[int | None, ...] | None]) -> None:
        """In graph order, a data-path output without a full shape gets the one ONNX infers for its node
        alone from the shapes known so far, else (a custom op) the shape of its first feature-map input."""
        feature = {i.name for i in self.data_inputs}
        for node in self.nodes:
            inputs = [i for i in node.input if i in feature]
            if not inputs or node.op_type in ("Shape", "Size"):
                continue
            outputs = [o for o in node.output if o]
            feature.update(outputs)
            like = inputs[0]
            if not outputs or _complete(shapes.get(outputs[0])) or not _complete(shapes.get(like)):
                continue  # known, or unknown since its producer (reported there)
            shapes.update(self._infer_node(node, shapes))
            if not _complete(shapes.get(outputs[0])):
                shapes[outputs[0]] = shapes[like]

    def _infer_node(self, node, shapes) -> dict[str, tuple[int | None, ...] | None]:
        """ONNX's inference of one standard node from its inputs' shapes ({} for a custom op or a failure)."""
        onnx = self.onnx
        if node.domain not in ("", "ai.onnx") or not all(_complete(shapes.get(i)) for i in node.input if i):
            return {}
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain)
            types = {
                i: onnx.helper.make_tensor_type_proto(self.elem_types.get(i) or onnx.TensorProto.FLOAT, shapes[i])
                for i in node.input
                if i
            }
            data = {i: self.small[i] for i in node.input if i in self.small}
            out = onnx.shape_inference.infer_node_outputs(schema, node, types, data)
        except Exception:  # SchemaError, InferenceError: the shape-preserving assumption applies
            return {}
        found = {}
        for name, value in out.items():
            if value.HasField("tensor_type") and value.tensor_type.HasField("shape"):
                dims = value.tensor_type.shape.dim
                found[name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
                self.elem_types[name] = value.tensor_type.elem_type
        return found

    def _check_dims(self, name: str, dims: tuple[int | None, ...]) -> None:
        """A batch-1 CNN's tensors are bounded: absurd declared sizes are refused, not estimated."""
        known = [int(d) for d in dims if d is not None]
        if any(d > MAX_DIM for d in known) or math.prod(known) > MAX_ELEMENTS:
            raise BadInputError(
                f"{self.source}: tensor '{name[:80]}' has shape {list(dims)}; more than {MAX_DIM} in one dimension "
                f"or {MAX_ELEMENTS} elements is not a model this reader estimates"
            )

    # -- lookups

    def shape(self, name: str) -> tuple[int, ...]:
        dims = self.shapes.get(name)
        if not _complete(dims):
            raise BadInputError(f"{self.source}: the shape of tensor '{name}' is unknown")
        return tuple(int(d) for d in dims)

    def numel(self, name: str) -> int:
        return _numel(self.shape(name)) if name in self.shapes else 0

    def value(self, name: str):
        """A small constant's value as a numpy array, None if it has no known value."""
        tensor = self.small.get(name)
        if tensor is None:
            return None
        try:
            return self.onnx.numpy_helper.to_array(tensor)
        except Exception:  # external data not loaded, odd types
            return None

    def single_reader(self, name: str) -> bool:
        return len(self.consumers.get(name, ())) == 1 and name not in self.graph_outputs


def _complete(dims) -> bool:
    return dims is not None and all(d is not None for d in dims)


def _chw(shape: tuple[int, ...]) -> Shape:
    """(N, C, ...) at batch 1 -> (C, H, W)."""
    rest = shape[1:]
    if not rest:
        return (1, 1, 1)
    if len(rest) == 1:
        return (rest[0], 1, 1)
    if len(rest) == 2:
        return (rest[0], rest[1], 1)
    return (rest[0], math.prod(rest[1:-1]), rest[-1])


def _channels_last(shape: tuple[int, ...]) -> Shape:
    """(N, ..., K) as MatMul sees it: K channels at each of the other positions."""
    rest = shape[1:] or (1,)
    *positions, k = rest
    if len(positions) <= 1:
        return (k, positions[0] if positions else 1, 1)
    return (k, math.prod(positions[:-1]), positions[-1])


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx_module().helper.get_attribute_value(a)
    return default


# ---------------------------------------------------------------------- the reader


def layers_from_onnx(model: Any, source: str | None = None) -> list[Layer]:
    """The layers of an ONNX CNN at batch 1 (see the module docstring for the rules).

    ``model``: a path to a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``. ``source`` names the
    model in error messages (default: the path). Raises :class:`BadInputError` for an unreadable or
    invalid model, a batch above 1 or a dynamic input size.
    """
    proto, source = _load(model, source)
    m = _Model(proto, source)
    return _Reader(m).run()


class _Reader:
    def __init__(self, m: _Model) -> None:
        self.m = m
        self.layers: list[Layer] = []
        self.feature = {i.name for i in m.data_inputs}
        self.foldable: dict[str, int] = {}  # conv/fc output tensor -> index of its layer
        self.unpadded: dict[str, str] = {}  # output of a folded Pad -> its input
        self.biased: set[int] = set()  # indices of conv/fc layers that have a bias

    def run(self) -> list[Layer]:
        for index, node in enumerate(self.m.nodes):
            fmaps = [i for i in node.input if i in self.feature]
            if not fmaps or node.op_type in ("Shape", "Size"):
                continue  # constant folding or shape arithmetic
            self.feature.update(o for o in node.output if o)
            if node.domain not in ("", "ai.onnx"):
                self._other(index, node, fmaps)
                continue
            # handlers are named after the (capitalised) ONNX op type: _Conv, _Add...
            handler = getattr(self, f"_{node.op_type}", None) if node.op_type[:1].isupper() else None
            if handler is None:
                if node.op_type in _NOOPS:
                    self._emit(index, node, LayerKind.RESHAPE, fmaps[0])
                elif node.op_type in _ACTIVATIONS:
                    self._emit(index, node, _ACTIVATIONS[node.op_type], fmaps[0])
                else:
                    self._other(index, node, fmaps)
            else:
                handler(index, node, fmaps)
        return self.layers

    # -- helpers

    def _name(self, index: int, node) -> str:
        return f"{index}:{node.name or node.output[0]}"

    def _in(self, name: str) -> Shape:
        return _chw(self.m.shape(self.unpadded.get(name, name)))

    def _out(self, node) -> Shape:
        return _chw(self.m.shape(node.output[0]))

    def _emit(self, index, node, op, first, **fields) -> Layer:
        fields.setdefault("in_shape", self._in(first))
        fields.setdefault("out_shape", self._out(node))
        layer = Layer(self._name(index, node), op, source_op=node.op_type, **fields)
        if min(*layer.kernel, layer.stride, layer.groups) < 1:  # a cost model divides by these
            raise self._bad(node, f"kernel {layer.kernel}, stride {layer.stride}, groups {layer.groups}: must be >= 1")
        if max(math.prod(layer.kernel), layer.stride) > MAX_KERNEL or layer.params > MAX_ELEMENTS:
            raise self._bad(node, f"kernel {layer.kernel}, stride {layer.stride}, {layer.params} parameters: too large")
        self.layers.append(layer)
        return layer

    def _bad(self, node, what: str) -> BadInputError:
        name = node.name or (node.output[0] if node.output else "?")
        return BadInputError(f"{self.m.source}: node '{name}' ({node.op_type}): {what}")

    def _ints(self, node, name: str) -> list[int] | None:
        """An INTS attribute whose entries must be >= 1 (strides, kernel_shape); None when absent or empty."""
        value = _attr(node, name, None)
        if value is None or (isinstance(value, list) and not value):
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) and v >= 1 for v in value):
            raise self._bad(node, f"attribute '{name}' is {value!r}; expected integers >= 1")
        return value

    def _other(self, index, node, fmaps) -> None:
        if node.output and node.output[0]:
            self._emit(index, node, LayerKind.OTHER, fmaps[0], inputs=len(fmaps))

    def _constants(self, node) -> list[str]:
        return [i for i in node.input if i and i not in self.feature]

    def _fold(self, node, bias: int) -> bool:
        """Fold ``node`` (BN or bias add) into the conv/fc layer that produced its only input.

        ``bias``: the elements of the bias it brings, added to the layer's params unless it has one.
        """
        source = next((i for i in node.input if i in self.feature), None)
        index = self.foldable.get(source)
        if index is None or not self.m.single_reader(source):
            return False
        if index not in self.biased:
            layer = self.layers[index]
            self.layers[index] = replace(layer, params=layer.params + bias)
            self.biased.add(index)
        self.foldable[node.output[0]] = index
        return True

    # -- convolutions and fully connected

    def _Conv(self, index, node, fmaps) -> None:
        x, w = node.input[0], node.input[1] if len(node.input) > 1 else ""
        if x not in self.feature or not w or w in self.feature:
            self._other(index, node, fmaps)
            return
        weight = self.m.shape(w)
        groups = _attr(node, "group", 1)
        if not isinstance(groups, int) or groups < 1:
            raise self._bad(node, f"attribute 'group' is {groups!r}; expected an integer >= 1")
        c_in = self._in(x)[0]
        fed = _chw(self.m.shape(x))[0]  # channels as the conv reads them (after a folded Pad)
        if node.op_type == "ConvTranspose":  # weight (C_in, C_out / group, k...)
            fits = len(weight) >= 2 and weight[0] == fed and fed % groups == 0
        else:  # weight (C_out, C_in / group, k...)
            fits = len(weight) >= 2 and weight[1] * groups == fed and weight[0] % groups == 0
        if not fits:
            raise self._bad(node, f"weight {list(weight)} does not fit {fed} input channel(s) in {groups} group(s)")
        if node.op_type == "ConvTranspose":  # a conv over the zero-upsampled input (MACs from the output)
            op = LayerKind.CONV
        elif groups > 1:
            op = LayerKind.DEPTHWISE if groups == c_in else LayerKind.GROUPED
        else:
            op = LayerKind.CONV
        spatial = weight[2:] or (1,)
        kernel = (int(spatial[0]), int(math.prod(spatial[1:])))
        strides = self._ints(node, "strides") or [1]
        params = _numel(weight) + (self.m.numel(node.input[2]) if len(node.input) > 2 and node.input[2] else 0)
        self._emit(index, node, op, x, kernel=kernel, stride=int(strides[0]), groups=groups, params=params)
        self._conv_like(node, biased=len(node.input) > 2 and bool(node.input[2]))

    _ConvTranspose = _Conv

    def _conv_like(self, node, biased: bool) -> None:
        """Register the layer just emitted as one that a following BN or bias add folds into."""
        self.foldable[node.output[0]] = len(self.layers) - 1
        if biased:
            self.biased.add(len(self.layers) - 1)

    def _Gemm(self, index, node, fmaps) -> None:
        a, b = node.input[0], node.input[1]
        if a not in self.feature or b in self.feature:
            self._other(index, node, fmaps)
            return
        params = self.m.numel(b) + (self.m.numel(node.input[2]) if len(node.input) > 2 and node.input[2] else 0)
        self._emit(index, node, LayerKind.FC, a, params=params)
        self._conv_like(node, biased=len(node.input) > 2 and bool(node.input[2]))

    def _MatMul(self, index, node, fmaps) -> None:
        a, b = node.input[0], node.input[1]
        if a not in self.feature or b in self.feature or len(self.m.shape(b)) != 2:
            self._other(index, node, fmaps)
            return
        in_shape, out_shape = _channels_last(self.m.shape(a)), _channels_last(self.m.shape(node.output[0]))
        self._emit(index, node, LayerKind.FC, a, in_shape=in_shape, out_shape=out_shape, params=self.m.numel(b))
        self._conv_like(node, biased=False)

    def _BatchNormalization(self, index, node, fmaps) -> None:
        x = node.input[0]
        channels = self._in(x)[0]
        if x in self.feature and self._fold(node, bias=channels):
            return
        out = self._out(node)
        self._emit(index, node, LayerKind.MUL, x, in_shape=out, params=2 * channels)

    # -- elementwise

    def _elementwise(self, index, node, fmaps, op: str, two_maps_ok: bool = True) -> None:
        out = self._out(node)
        if len(fmaps) >= 2:
            if two_maps_ok:
                self._emit(index, node, op, fmaps[0], in_shape=out, inputs=len(fmaps))
            else:
                self._other(index, node, fmaps)
            return
        constants = self._constants(node)
        params = sum(self.m.numel(c) for c in constants)
        self._emit(index, node, LayerKind.MUL, fmaps[0], in_shape=out, params=params)

    def _Add(self, index, node, fmaps) -> None:
        if len(fmaps) == 1:
            constants = self._constants(node)
            source = self.foldable.get(fmaps[0])
            if source is not None and len(constants) == 1:
                numel = self.m.numel(constants[0])
                if numel == self.layers[source].out_shape[0] and self._fold(node, bias=numel):
                    return
        self._elementwise(index, node, fmaps, LayerKind.ADD)

    def _Sum(self, index, node, fmaps) -> None:
        self._elementwise(index, node, fmaps, LayerKind.ADD)

    def _Sub(self, index, node, fmaps) -> None:
        self._elementwise(index, node, fmaps, LayerKind.ADD)

    def _Mul(self, index, node, fmaps) -> None:
        self._elementwise(index, node, fmaps, LayerKind.MUL)

    def _Div(self, index, node, fmaps) -> None:
        if node.input[0] not in self.feature:  # constant / x
            self._other(index, node, fmaps)
            return
        self._elementwise(index, node, fmaps, LayerKind.MUL, two_maps_ok=False)

    def _Concat(self, index, node, fmaps) -> None:
        self._emit(index, node, LayerKind.CONCAT, fmaps[0], inputs=len(fmaps))

    # -- pooling

    def _pool(self, index, node, fmaps, op: str) -> None:
        kernel = self._ints(node, "kernel_shape") or [1]
        strides = self._ints(node, "strides") or [1]
        kernel = (int(kernel[0]), int(math.prod(kernel[1:]) if len(kernel) > 1 else 1))
        self._emit(index, node, op, fmaps[0], kernel=kernel, stride=int(strides[0]))

    def _MaxPool(self, index, node, fmaps) -> None:
        self._pool(index, node, fmaps, LayerKind.MAXPOOL)

    def _AveragePool(self, index, node, fmaps) -> None:
        self._pool(index, node, fmaps, LayerKind.AVGPOOL)

    def _global(self, index, node, fmaps) -> None:
        _, h, w = self._in(fmaps[0])
        self._emit(index, node, LayerKind.GLOBALPOOL, fmaps[0], kernel=(h, w))

    _GlobalAveragePool = _global
    _GlobalMaxPool = _global

    def _reduce(self, index, node, fmaps) -> None:
        rank = len(self.m.shape(fmaps[0]))
        axes = _attr(node, "axes", None)
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = self.m.value(node.input[1])
            axes = None if value is None or value.dtype.kind not in "iu" else [int(a) for a in value.reshape(-1)]
        if rank == 4 and isinstance(axes, list) and {a % rank for a in axes if isinstance(a, int)} == {2, 3}:
            self._global(index, node, fmaps)
        else:
            self._other(index, node, fmaps)

    _ReduceMean = _reduce
    _ReduceMax = _reduce

    # -- activations and layout

    def _Clip(self, index, node, fmaps) -> None:
        if self.m.opset < 11:
            low, high = _attr(node, "min", None), _attr(node, "max", None)
        else:
            bounds = [self.m.value(n) if n else None for n in (list(node.input[1:3]) + ["", ""])[:2]]
            given = [bool(n) for n in (list(node.input[1:3]) + ["", ""])[:2]]
            if any(g and (b is None or b.size != 1 or b.dtype.kind not in "iuf") for g, b in zip(given, bounds)):
                self._other(index, node, fmaps)  # a bound computed at run time (or not one number)
                return
            low, high = (None if b is None else float(b.reshape(-1)[0]) for b in bounds)
        if high is not None and high >= 3.0e38:
            high = None
        if low == 0.0 and high == 6.0:
            op = LayerKind.RELU6
        elif low == 0.0 and high is None:
            op = LayerKind.RELU
        else:
            op = LayerKind.OTHER
        self._emit(index, node, op, fmaps[0])

    def _Transpose(self, index, node, fmaps) -> None:
        shape = self.m.shape(fmaps[0])
        perm = _attr(node, "perm", None) or list(reversed(range(len(shape))))
        if not isinstance(perm, list) or sorted(perm) != list(range(len(shape))):
            raise self._bad(node, f"attribute 'perm' is {perm!r}, not a permutation of the {len(shape)} axes")
        moved = [axis for axis in perm if shape[axis] != 1]
        self._emit(index, node, LayerKind.RESHAPE if moved == sorted(moved) else LayerKind.OTHER, fmaps[0])

    def _Pad(self, index, node, fmaps) -> None:
        x, out = node.input[0], node.output[0]
        mode = _attr(node, "mode", b"constant")
        mode = mode.decode(errors="replace") if isinstance(mode, bytes) else mode
        readers = self.m.consumers.get(out, [])
        if (
            mode == "constant"
            and x in self.feature
            and self.m.single_reader(out)
            and readers[0].op_type in _FOLD_PAD_INTO
            and readers[0].input[0] == out
        ):
            self.unpadded[out] = self.unpadded.get(x, x)
            return
        self._other(index, node, fmaps)
