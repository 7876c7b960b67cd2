"""INT8 post-training quantization of the toolkit's ONNX graphs, the data it is calibrated on, and
the check of a quantized artifact against the float network.

One quantizer serves every ONNX-based INT8 target: ``onnxruntime.quantization.quantize_static``
writes a QDQ model (QuantizeLinear/DequantizeLinear pairs around each quantized operator), with

* weights int8, symmetric, one scale per output channel;
* activations uint8, asymmetric, one scale per tensor (U8S8: the combination ONNX Runtime's x86
  kernels run fastest on AVX2 machines without VNNI, such as this project's CI machines);
* MinMax calibration on the inputs given.

ONNX Runtime runs that model with integer kernels (QLinearConv and friends after its QDQ fusion);
OpenVINO reads the same model and executes the quantized operators in int8 (its low-precision
transformations turn each Q/DQ pair into a FakeQuantize). Using the same QDQ model for both means
their int8 latencies belong to the same quantized network.

Calibration data (``--calibration-data``): ``random`` (standard normal inputs; right for latency
tables, where values do not change the time, and said so in the manifest: useless for accuracy),
``digits`` (scikit-learn's digits, the toy set the toolkit trains on) or ``imagefolder:PATH``
(images preprocessed as the bundles record it).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.errors import BadInputError, OFADeployError, one_line

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_CHOICES = "random, digits or imagefolder:PATH"
CALIBRATION_INPUTS = 32  # inputs a compiled network is calibrated and checked on
OPERATOR_CALIBRATION_INPUTS = 4  # random inputs per operator model of a latency table (values do not matter)
# What compile's check of an int8 artifact against the float network needs (both are recorded in the manifest).
MIN_TOP1_AGREEMENT = 0.9  # same top-1 class as the float network on this share of the calibration inputs
MIN_MEAN_COSINE = 0.98  # mean cosine similarity of the logits
QUANTIZATION = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "weights": "int8, symmetric, per output channel",
    "activations": "uint8, asymmetric, per tensor",
    "calibration_method": "MinMax",
}


def check_precision(backend: str, value: str, runs: Sequence[str], why: str = "") -> None:
    """A backend settings' ``validate()`` step: ``value`` must be one of the precisions it ``runs``."""
    if value not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {value!r}")
    if value not in runs:
        raise ValueError(
            f"precision: backend {backend} runs {' or '.join(runs)} here, not {value}" + (f" ({why})" if why else "")
        )


# ---------------------------------------------------------------------- calibration data
@dataclass(frozen=True)
class CalibrationData:
    """Where calibration inputs come from: ``random``, ``digits`` or ``imagefolder:PATH``."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> CalibrationData:
        if text in ("random", "digits"):
            return cls(text)
        if text.startswith("imagefolder:") and text.removeprefix("imagefolder:"):
            path = Path(text.removeprefix("imagefolder:")).expanduser()
            if not path.is_dir():
                raise BadInputError(f"--calibration-data {text}: {path} is not a directory of images")
            return cls("imagefolder", path)
        raise BadInputError(f"--calibration-data {text!r}: expected {CALIBRATION_CHOICES}")

    def inputs(self, shape: Sequence[int], count: int = CALIBRATION_INPUTS, seed: int = 0) -> list[np.ndarray]:
        """``count`` float32 inputs of ``shape`` (batch 1, NCHW); images need a square 3-channel input."""
        shape = tuple(int(s) for s in shape)
        if self.kind == "random":
            rng = np.random.default_rng(seed)
            return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or shape[2] != shape[3]:
            raise BadInputError(f"--calibration-data {self.kind}: images need a 1x3xRxR input, not {shape}")
        if self.kind == "digits":
            from ofa_deploy.nn.data import digits_images, render_grey

            images, _ = digits_images()["train"]
            chosen = np.random.default_rng(seed).permutation(len(images))[:count]
            rendered = render_grey(images[chosen], shape[2]).numpy().astype(np.float32)
            return [x[None] for x in rendered]
        from ofa_deploy.nn.data import image_batches

        assert self.path is not None
        return [b.numpy()[i : i + 1] for b in image_batches(self.path, shape[2], 8, count, seed) for i in range(len(b))]

    def record(self, count: int) -> dict[str, Any]:
        """What a manifest says about it (the kind and the count, never a host path)."""
        note = {"random": "random inputs: right for latency, say nothing about accuracy"}.get(self.kind)
        return {"data": self.kind, "inputs": count, **({"note": note} if note else {})}


RANDOM = CalibrationData("random")


# ---------------------------------------------------------------------- quantization
class _Reader:
    """The calibration inputs as ``onnxruntime.quantization`` reads them."""

    def __init__(self, name: str, inputs: Sequence[np.ndarray]):
        self._feeds: Iterator[dict[str, np.ndarray]] = iter([{name: x} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the reader interface; one pass is all MinMax needs
        pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice ("consider pre-processing") on the root logger at WARNING: not ours to show."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_onnx(onnx_bytes: bytes, inputs: Sequence[np.ndarray], input_name: str = "input") -> bytes:
    """The QDQ int8 model of ``onnx_bytes`` (see the module doc), calibrated on ``inputs``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not inputs:
        raise BadInputError("int8 quantization needs at least one calibration input")
    model = onnx.load_model_from_string(onnx_bytes)
    with tempfile.TemporaryDirectory(prefix="ofa-deploy-int8-") as folder, _quiet():
        out = Path(folder) / "int8.onnx"
        try:
            quantize_static(
                model,
                out,
                _Reader(input_name, inputs),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                calibration_providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # an operator the quantizer cannot handle, a calibration run that failed
            raise OFADeployError(f"int8 quantization failed: {one_line(exc)}") from None
        return out.read_bytes()


def integer_summary(onnx_bytes: bytes) -> dict[str, Any]:
    """What in a QDQ model is integer: the quantize/dequantize node counts, the int8 weight tensors,
    and per operator type how many run on quantized inputs (every float input dequantized) and how
    many stay float."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    graph = model.graph
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    constant = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        data = [name for name in node.input if name and name not in constant]
        (quantized if data and all(name in dequantized for name in data) else floating)[node.op_type] += 1
    weights = sum(
        1 for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8 and n.input[0] in constant
    )
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in graph.node),
        "dequantize_linear": len(dequantized),
        "int8_weight_tensors": weights,
        "quantized_ops": dict(sorted(quantized.items())),
        "float_ops": dict(sorted(floating.items())),
    }


def any_batch_and_size(onnx_bytes: bytes) -> bytes:
    """The model with its input's batch, height and width (and its output's batch) left free: one network
    quantized once, then evaluated on batches of images of the size its data comes at (digits: r / 4)."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    for value, free in ((model.graph.input[0], (0, 2, 3)), (model.graph.output[0], (0,))):
        dims = value.type.tensor_type.shape.dim
        for axis in free:
            if axis < len(dims):
                dims[axis].dim_param = ("N", "C", "H", "W")[axis]
    del model.graph.value_info[:]  # intermediate shapes depended on the fixed size
    return model.SerializeToString()


def onnx_at_precision(graph: Any, precision: str, calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """``graph`` (a :class:`~ofa_deploy.graph.ir.Graph`) as ONNX: float32, or for ``int8`` its QDQ model
    calibrated on ``calibration`` (None: a few random inputs, which is all a latency measurement needs)."""
    from ofa_deploy.graph.onnx_writer import to_onnx_bytes

    data = to_onnx_bytes(graph)
    if precision != "int8":
        return data
    if calibration is None:
        calibration = RANDOM.inputs(graph.input_shape, OPERATOR_CALIBRATION_INPUTS)
    return quantize_onnx(data, calibration, graph.input_name)


def quantization_details(qdq_bytes: bytes) -> dict[str, Any]:
    """What an int8 artifact's ``details`` record: how it was quantized and what in it is integer."""
    return {"quantization": {**QUANTIZATION, "integer_ops": integer_summary(qdq_bytes)}}


# ---------------------------------------------------------------------- checking the artifact
def compare_to_float(expected: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> dict[str, Any]:
    """An int8 artifact's outputs against the float network's on the same inputs: top-1 agreement and
    the cosine similarity of the logits, with the thresholds they are held to."""
    cosines, agree = [], 0
    for e, g in zip(expected, got):
        e, g = np.asarray(e, np.float64).ravel(), np.asarray(g, np.float64).ravel()
        norm = float(np.linalg.norm(e) * np.linalg.norm(g))
        cosines.append(float(e @ g / norm) if norm > 0 else (1.0 if not e.any() and not g.any() else 0.0))
        agree += int(e.argmax() == g.argmax())
    n = max(1, len(cosines))
    top1, mean_cos = agree / n, float(np.mean(cosines)) if cosines else 0.0
    return {
        "against": "torch float32 (extracted sub-network)",
        "inputs": len(cosines),
        "top1_agreement": top1,
        "mean_cosine": mean_cos,
        "min_cosine": float(min(cosines)) if cosines else 0.0,
        "thresholds": {"top1_agreement": MIN_TOP1_AGREEMENT, "mean_cosine": MIN_MEAN_COSINE},
        "passed": bool(cosines) and top1 >= MIN_TOP1_AGREEMENT and mean_cos >= MIN_MEAN_COSINE,
    }
