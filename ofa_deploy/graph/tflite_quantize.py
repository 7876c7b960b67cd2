"""Full-integer int8 TFLite models of a graph: calibrate the float model, then write it int8.

The float ``.tflite`` of the graph runs in the LiteRT interpreter on the calibration inputs with every
intermediate tensor kept; each tensor's minimum and maximum over those runs becomes its int8 range
(MinMax, as ``onnxruntime.quantization`` calibrates the ONNX models), and the writer
(:func:`ofa_deploy.graph.tflite_writer.to_tflite_bytes`) writes the same graph, tensor for tensor,
full-integer. Writing the flatbuffer ourselves keeps per-operator models and whole networks
identical op for op at int8 too, which a converter run per operator would not guarantee.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ofa_deploy.graph.ir import Graph
from ofa_deploy.graph.tflite_writer import Ranges, to_tflite_bytes


def tensor_ranges(float_model: bytes, inputs: Sequence[np.ndarray]) -> Ranges:
    """Every float tensor's (min, max) over ``inputs`` (NCHW, batch 1) run through ``float_model``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=float_model,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,  # every tensor kept
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]["index"]
    tensors = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32]
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for x in inputs:
        interpreter.set_tensor(entry, np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1)))
        interpreter.invoke()
        for detail in tensors:
            value = interpreter.get_tensor(detail["index"])
            if value.size == 0:
                continue
            name = detail["name"]
            low[name] = min(low.get(name, np.inf), float(value.min()))
            high[name] = max(high.get(name, -np.inf), float(value.max()))
    return {name: (low[name], high[name]) for name in low}


def int8_tflite(graph: Graph, inputs: Sequence[np.ndarray]) -> bytes:
    """``graph`` as a full-integer int8 ``.tflite`` (float input and output), calibrated on ``inputs``."""
    return to_tflite_bytes(graph, tensor_ranges(to_tflite_bytes(graph), inputs))


def tensor_types(model: bytes) -> dict[str, Any]:
    """What a ``.tflite`` holds, by operator: the types of each operator's input, weight and output
    tensors, counted (``CONV_2D: {"INT8/INT8/INT8": 40}``): the proof that a model is integer."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    counts: dict[str, Counter[str]] = {}
    sub = root.subgraphs[0]
    for op in sub.operators:
        code = root.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        shown = [types[sub.tensors[i].type] for i in [*op.inputs[:2], *op.outputs] if i >= 0]
        counts.setdefault(name, Counter())["/".join(shown)] += 1
    return {name: dict(c) for name, c in sorted(counts.items())}
