"""Host CPU through ONNX Runtime's CPU execution provider (the default backend)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import ONNX, Artifact
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

MODEL_FILE = "model.onnx"
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
OPTIMIZATION_LEVELS = ("all", "extended", "basic", "none")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class OnnxRuntimeSettings(BackendSettings):
    """Settings of the onnxruntime backend: the graph optimisation level and the precision."""

    graph_optimization: str = setting("all", "ONNX Runtime graph optimisation level: all, extended, basic, none")
    precision: str = setting("fp32", "fp32, or int8: the QDQ model of onnxruntime.quantization (U8S8, per-channel)")

    def validate(self) -> None:
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"graph_optimization: must be one of {', '.join(OPTIMIZATION_LEVELS)}")
        check_precision("onnxruntime", self.precision, PRECISIONS, "the CPU provider has no fp16 convolution kernels")


class _OrtModelSession(ModelSession):
    """Any ONNX file in an ONNX Runtime session; the operator profile is ORT's profiling trace."""

    def __init__(self, backend: OnnxRuntimeBackend, path: Path, shapes: dict[str, tuple[int, ...]], profile: bool):
        self._folder = tempfile.mkdtemp(prefix="ofa-deploy-ort-profile-") if profile else None
        prefix = str(Path(self._folder) / "ort") if self._folder else None
        try:
            self.session = backend.session(str(path), prefix)
        except Exception as exc:  # ORT's InvalidGraph, NotImplemented (an operator), InvalidProtobuf, Fail
            raise BadInputError(f"{path}: onnxruntime cannot run it: {one_line(exc)}") from None
        declared = self.session.get_inputs()
        self.inputs, self.feed = {}, {}
        for item in declared:
            dtype = ORT_TYPES.get(item.type)
            if dtype is None:
                raise BadInputError(f"{path}: input '{item.name}' is {item.type}, which benchmark cannot fill")
            self.inputs[item.name] = resolve_shape(str(path), item.name, item.shape, shapes)
            self.feed[item.name] = random_input(self.inputs[item.name], dtype)
        self.runs = 0

    def run(self) -> None:
        try:
            self.session.run(None, self.feed)
        except Exception as exc:  # a shape the model rejects, an operator failing on these inputs
            raise BadInputError(f"onnxruntime failed to run the model: {one_line(exc)}") from None
        self.runs += 1

    def operator_times(self) -> list[OperatorTiming] | None:
        if self._folder is None:
            return None
        trace = json.loads(Path(self.session.end_profiling()).read_text())
        rows = [
            (e["name"].removesuffix("_kernel_time"), e.get("args", {}).get("op_name", "?"), e["dur"] / 1e3)
            for e in trace
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
        ]
        return merge_operator_times(rows, self.runs)

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


class OnnxRuntimeBackend(LocalRuntimeBackend, ModelFileRunner):
    """The host CPU through ONNX Runtime's CPU execution provider (the default backend); bundles hold ``model.onnx``."""

    name = "onnxruntime"
    extra = ""  # a core dependency of ofa-deploy
    description = "host CPU, ONNX Runtime CPU execution provider"
    artifact_kinds = (ONNX,)
    operator_profiler = "ORT profiling trace"
    model_suffixes = (".onnx",)
    Settings = OnnxRuntimeSettings
    settings: OnnxRuntimeSettings

    def _ort(self):
        return require_module(self.name, self.extra, "onnxruntime")

    def runtime_info(self) -> dict[str, str]:
        return {"runtime": "onnxruntime", "runtime_version": self._ort().__version__}

    def session(self, model: bytes | str, profile_prefix: str | None = None):
        ort = self._ort()
        options = ort.SessionOptions()
        if profile_prefix is not None:  # ORT's own profiler: one JSON trace of every operator run
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        options.intra_op_num_threads = self.timing.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.settings.graph_optimization]
        options.log_severity_level = 3
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def open_model_file(self, path: Path, shapes: dict[str, tuple[int, ...]], op_profile: bool = False):
        return _OrtModelSession(self, path, shapes, op_profile)

    def load(self, graph: Graph) -> Callable[[], Any]:
        session = self.session(onnx_at_precision(graph, self.precision, self.calibration_inputs))
        feed = {"input": np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)}
        return lambda: session.run(None, feed)

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        model = onnx_at_precision(graph, self.precision, self.calibration_inputs)
        (directory / MODEL_FILE).write_bytes(model)
        details = quantization_details(model) if self.precision == "int8" else {}
        return Artifact.of_graph(ONNX, [MODEL_FILE], graph, details)

    def load_artifact(self, directory: Path, artifact: Artifact):
        session = self.session(str(directory / artifact.main))
        return lambda x: session.run(None, {artifact.input_name: x})[0]
