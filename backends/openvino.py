"""Intel CPU through the OpenVINO CPU plugin: float32 (the f32 hint: the default bf16 differs by 1e-3), or int8
from the QDQ model of :mod:`ofa_deploy.backend.quantization`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import OPENVINO_IR, Artifact
from ofa_deploy.backend.interface import LocalRuntimeBackend, ModelFileRunner, require_module
from ofa_deploy.backend.model_file import (
    ModelSession,
    merge_operator_times,
    random_input,
    resolve_shape,
)
from ofa_deploy.backend.quantization import check_precision, onnx_at_precision, quantization_details
from ofa_deploy.backend.settings import BackendSettings, setting
from ofa_deploy.backend.tool_output import OperatorTiming
from ofa_deploy.errors import BadInputError, one_line
from ofa_deploy.graph.ir import Graph

MODEL_FILES = ["model.xml", "model.bin"]
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class OpenVinoSettings(BackendSettings):
    """Settings of the openvino backend: the OpenVINO device the models are compiled for, and the precision."""

    device: str = setting("CPU", "OpenVINO device name")
    precision: str = setting("fp32", "fp32, or int8: OpenVINO runs the QDQ model of onnxruntime.quantization in int8")

    def validate(self) -> None:
        check_precision("openvino", self.precision, PRECISIONS, "fp16 inference needs a CPU with AVX512-FP16 or AMX")


class _OpenVinoModelSession(ModelSession):
    """Any ONNX file or OpenVINO IR compiled for the backend's device; the operator profile is
    OpenVINO's PERF_COUNT (per executed node, summed over the runs)."""

    def __init__(self, backend: OpenVinoBackend, path: Path, shapes: dict[str, tuple[int, ...]], profile: bool):
        ov = backend._ov()
        try:
            model = ov.Core().read_model(str(path))
            names = [port.get_any_name() for port in model.inputs]
            self.inputs = {}
            for port, name in zip(model.inputs, names):
                declared = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
                self.inputs[name] = resolve_shape(str(path), name, declared, shapes)
            if shapes:
                model.reshape({name: ov.PartialShape(list(shape)) for name, shape in self.inputs.items()})
            compiled = backend.compile_model(model, {"PERF_COUNT": True} if profile else None)
        except BadInputError:
            raise
        except Exception as exc:  # an unsupported operator, a malformed file, a shape that does not fit
            raise BadInputError(f"{path}: openvino cannot run it: {one_line(exc)}") from None
        self.request = compiled.create_infer_request()
        for port, name in zip(model.inputs, names):
            dtype = port.get_element_type().to_dtype()
            self.request.set_tensor(name, ov.Tensor(random_input(self.inputs[name], dtype)))
        self.profile, self.rows, self.runs = profile, [], 0

    def run(self) -> None:
        try:
            self.request.infer()
        except Exception as exc:
            raise BadInputError(f"openvino failed to run the model: {one_line(exc)}") from None
        self.runs += 1
        if self.profile:  # the profile of the last inference only: collect it after each one
            for info in self.request.get_profiling_info():
                if str(info.status).endswith("EXECUTED"):
                    self.rows.append((info.node_name, info.node_type, info.real_time.total_seconds() * 1e3))

    def operator_times(self) -> list[OperatorTiming] | None:
        return merge_operator_times(self.rows, self.runs) if self.profile else None


class OpenVinoBackend(LocalRuntimeBackend, ModelFileRunner):
    """Intel CPU through OpenVINO, float32 with the latency hint; bundles hold the IR (``model.xml``, ``model.bin``)."""

    name = "openvino"
    extra = "openvino"
    description = "Intel CPU, OpenVINO CPU plugin (f32)"
    artifact_kinds = (OPENVINO_IR,)
    operator_profiler = "OpenVINO PERF_COUNT"
    model_suffixes = (".onnx", ".xml")
    Settings = OpenVinoSettings
    settings: OpenVinoSettings

    def _ov(self):
        return require_module(self.name, self.extra, "openvino")

    def runtime_info(self) -> dict[str, str]:
        ov = self._ov()
        return {"runtime": "openvino", "runtime_version": ov.get_version()}

    def compile_model(self, model, extra: dict[str, Any] | None = None):
        """Compile an ``ov.Model`` for this backend's device with latency-oriented, f32 settings (and ``extra``)."""
        ov = self._ov()
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.timing.threads,
            "NUM_STREAMS": 1,
            **(extra or {}),
        }
        return core.compile_model(model, self.settings.device, config)

    def open_model_file(self, path: Path, shapes: dict[str, tuple[int, ...]], op_profile: bool = False):
        return _OpenVinoModelSession(self, path, shapes, op_profile)

    def read_onnx(self, onnx_bytes: bytes):
        return self._ov().Core().read_model(onnx_bytes, b"")

    def load(self, graph: Graph) -> Callable[[], Any]:
        compiled = self.compile_model(self.read_onnx(onnx_at_precision(graph, self.precision, self.calibration_inputs)))
        request = compiled.create_infer_request()
        x = np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)
        request.set_input_tensor(self._ov().Tensor(x))
        return request.infer

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        """OpenVINO IR (model.xml + model.bin): float32 weights, or for int8 the QDQ model as OpenVINO reads
        it (FakeQuantize operations; the plugin runs the quantized layers in int8)."""
        ov = self._ov()
        onnx_model = onnx_at_precision(graph, self.precision, self.calibration_inputs)
        model = self.read_onnx(onnx_model)
        ov.save_model(model, str(directory / MODEL_FILES[0]), compress_to_fp16=False)
        details = {}
        if self.precision == "int8":
            details = quantization_details(onnx_model)
            details["quantization"]["openvino_runtime_precisions"] = self.runtime_precisions(model)
        return Artifact.of_graph(OPENVINO_IR, MODEL_FILES, graph, details)

    def runtime_precisions(self, model) -> dict[str, dict[str, int]]:
        """Per layer type of the compiled model (the plugin's own graph), how many layers run in which
        precision: the proof that an int8 model executes in int8 (convolutions in u8/i8)."""
        counts: dict[str, dict[str, int]] = {}
        for op in self.compile_model(model).get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "runtimePrecision" not in info or "layerType" not in info:
                continue
            layer, precision = info["layerType"].astype(str), info["runtimePrecision"].astype(str)
            counts.setdefault(layer, {}).setdefault(precision, 0)
            counts[layer][precision] += 1
        return dict(sorted(counts.items()))

    def load_artifact(self, directory: Path, artifact: Artifact):
        ov = self._ov()
        compiled = self.compile_model(ov.Core().read_model(str(directory / artifact.main)))
        request = compiled.create_infer_request()

        def run(x):
            request.set_input_tensor(ov.Tensor(x))
            request.infer()
            return request.get_output_tensor().data.copy()

        return run
