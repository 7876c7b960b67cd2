"""Host CPU with TFLite kernels: the ai-edge-litert interpreter with XNNPACK (as on a phone's CPU)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import TFLITE, Artifact
from ofa_deploy.backend.interface import LocalRuntimeBackend, ModelFileRunner, require_module
from ofa_deploy.backend.model_file import ModelSession, random_input, resolve_shape
from ofa_deploy.backend.quantization import OPERATOR_CALIBRATION_INPUTS, RANDOM, check_precision
from ofa_deploy.backend.settings import BackendSettings, setting
from ofa_deploy.errors import BadInputError, one_line
from ofa_deploy.graph.ir import Graph
from ofa_deploy.graph.tflite_quantize import int8_tflite, tensor_types
from ofa_deploy.graph.tflite_writer import to_tflite_bytes

MODEL_FILE = "model.tflite"
PRECISIONS = ("fp32", "int8")
NO_PROFILER = (
    "the LiteRT Python interpreter has no operator profiler (on a phone, benchmark_model "
    "--enable_op_profiling=true has one)"
)


INT8_QUANTIZATION = {
    "tool": "ofa-deploy TFLite writer (ofa_deploy/graph/tflite_quantize.py)",
    "format": "full-integer int8, float input and output (QUANTIZE/DEQUANTIZE)",
    "weights": "int8, symmetric, per output channel (fully connected: per tensor)",
    "activations": "int8, asymmetric, per tensor",
    "calibration_method": "MinMax",
}


def tflite_model(graph: Graph, precision: str, calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """``graph`` as a ``.tflite``: float32, or full-integer int8 calibrated on ``calibration`` (None: a few
    random inputs, which is all a latency measurement needs); shared with the adb backend."""
    if precision != "int8":
        return to_tflite_bytes(graph)
    if calibration is None:
        calibration = RANDOM.inputs(graph.input_shape, OPERATOR_CALIBRATION_INPUTS)
    return int8_tflite(graph, calibration)


def tflite_artifact(
    graph: Graph, directory: Path, precision: str = "fp32", calibration: Sequence[np.ndarray] | None = None
) -> Artifact:
    """Write ``model.tflite`` (NHWC input) for ``graph``; shared with the adb backend."""
    model = tflite_model(graph, precision, calibration)
    (directory / MODEL_FILE).write_bytes(model)
    n, c, h, w = graph.input_shape
    details = (
        {"quantization": {**INT8_QUANTIZATION, "tensor_types": tensor_types(model)}} if precision == "int8" else {}
    )
    return Artifact(TFLITE, [MODEL_FILE], "input", [n, h, w, c], "NHWC", "output", list(graph.output_shape), details)


@contextmanager
def quiet_native_stderr():
    """The interpreter prints an INFO line per model from C++; keep the user's terminal clean."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class TFLiteSettings(BackendSettings):
    """Settings of the tflite backend: whether the XNNPACK delegate runs the models."""

    xnnpack: bool = setting(True, "use the XNNPACK delegate")
    precision: str = setting("fp32", "fp32, or int8: full-integer .tflite (XNNPACK runs it, but for hard-swish)")

    def validate(self) -> None:
        check_precision("tflite", self.precision, PRECISIONS, "LiteRT's fp16 runs through the GPU delegate")


class _TFLiteModelSession(ModelSession):
    """Any .tflite file in the LiteRT interpreter (XNNPACK as configured). The Python interpreter has
    no operator profiler: on a phone, ``benchmark_model --enable_op_profiling`` has one."""

    def __init__(self, backend: TFLiteBackend, path: Path, shapes: dict[str, tuple[int, ...]]):
        try:
            interpreter = backend.interpreter(path.read_bytes(), allocate=False)
            details = interpreter.get_input_details()
            self.inputs = {}
            for detail in details:
                declared = [None if d < 0 else int(d) for d in detail.get("shape_signature", detail["shape"])]
                shape = resolve_shape(str(path), detail["name"], declared, shapes)
                self.inputs[detail["name"]] = shape
                if list(shape) != [int(d) for d in detail["shape"]]:
                    interpreter.resize_tensor_input(detail["index"], list(shape))
            with quiet_native_stderr():
                interpreter.allocate_tensors()
            for detail in details:
                interpreter.set_tensor(detail["index"], random_input(self.inputs[detail["name"]], detail["dtype"]))
        except (BadInputError, OSError):
            raise
        except Exception as exc:  # not a flatbuffer, an operator this interpreter lacks
            raise BadInputError(f"{path}: the LiteRT interpreter cannot run it: {one_line(exc)}") from None
        self.interpreter = interpreter

    def run(self) -> None:
        try:
            self.interpreter.invoke()
        except Exception as exc:
            raise BadInputError(f"the LiteRT interpreter failed to run the model: {one_line(exc)}") from None


class TFLiteBackend(LocalRuntimeBackend, ModelFileRunner):
    """The host CPU with TFLite kernels (LiteRT interpreter, XNNPACK by default); bundles hold ``model.tflite``."""

    name = "tflite"
    extra = "tflite"
    description = "host CPU, LiteRT (TFLite) interpreter with XNNPACK"
    artifact_kinds = (TFLITE,)
    model_suffixes = (".tflite",)
    Settings = TFLiteSettings
    settings: TFLiteSettings

    def _interpreter_module(self):
        return require_module(self.name, self.extra, "ai_edge_litert.interpreter", "ai-edge-litert")

    def runtime_info(self) -> dict[str, str]:
        self._interpreter_module()
        from importlib.metadata import version

        return {"runtime": "ai-edge-litert", "runtime_version": version("ai-edge-litert")}

    def interpreter(self, model: bytes, allocate: bool = True):
        module = self._interpreter_module()
        resolver = (
            module.OpResolverType.AUTO
            if self.settings.xnnpack
            else module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        with quiet_native_stderr():
            interpreter = module.Interpreter(
                model_content=model, num_threads=self.timing.threads, experimental_op_resolver_type=resolver
            )
            if allocate:
                interpreter.allocate_tensors()
        return interpreter

    def open_model_file(self, path: Path, shapes: dict[str, tuple[int, ...]], op_profile: bool = False):
        if op_profile:
            raise BadInputError(f"backend 'tflite' cannot profile operators: {NO_PROFILER}")
        return _TFLiteModelSession(self, path, shapes)

    def load(self, graph: Graph) -> Callable[[], Any]:
        interpreter = self.interpreter(tflite_model(graph, self.precision, self.calibration_inputs))
        detail = interpreter.get_input_details()[0]
        x = np.random.default_rng(0).standard_normal(tuple(detail["shape"]), dtype=np.float32)
        interpreter.set_tensor(detail["index"], x)
        return interpreter.invoke

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        return tflite_artifact(graph, directory, self.precision, self.calibration_inputs)

    def load_artifact(self, directory: Path, artifact: Artifact):
        interpreter = self.interpreter((directory / artifact.main).read_bytes())
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]

        def run(x):
            interpreter.set_tensor(inp, x)
            interpreter.invoke()
            return interpreter.get_tensor(out).copy()

        return run
