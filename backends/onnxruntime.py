"""Host CPU through ONNX Runtime's CPU execution provider (the default backend)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import ONNX, Artifact
from ofa_deploy.backend.interface import LocalRuntimeBackend, require_module
from ofa_deploy.backend.settings import BackendSettings, setting
from ofa_deploy.graph.ir import Graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes

MODEL_FILE = "model.onnx"
OPTIMIZATION_LEVELS = ("all", "extended", "basic", "none")


@dataclass(frozen=True)
class OnnxRuntimeSettings(BackendSettings):
    """Settings of the onnxruntime backend: the graph optimisation level."""

    graph_optimization: str = setting("all", "ONNX Runtime graph optimisation level: all, extended, basic, none")

    def validate(self) -> None:
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"graph_optimization: must be one of {', '.join(OPTIMIZATION_LEVELS)}")


class OnnxRuntimeBackend(LocalRuntimeBackend):
    """The host CPU through ONNX Runtime's CPU execution provider (the default backend); bundles hold ``model.onnx``."""

    name = "onnxruntime"
    extra = ""  # a core dependency of ofa-deploy
    description = "host CPU, ONNX Runtime CPU execution provider"
    artifact_kinds = (ONNX,)
    Settings = OnnxRuntimeSettings
    settings: OnnxRuntimeSettings

    def _ort(self):
        return require_module(self.name, self.extra, "onnxruntime")

    def runtime_info(self) -> dict[str, str]:
        return {"runtime": "onnxruntime", "runtime_version": self._ort().__version__}

    def session(self, model: bytes | str):
        ort = self._ort()
        options = ort.SessionOptions()
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

    def load(self, graph: Graph) -> Callable[[], Any]:
        session = self.session(to_onnx_bytes(graph))
        feed = {"input": np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)}
        return lambda: session.run(None, feed)

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        (directory / MODEL_FILE).write_bytes(to_onnx_bytes(graph))
        return Artifact(
            ONNX, [MODEL_FILE], "input", list(graph.input_shape), "NCHW", "output", list(graph.output_shape)
        )

    def load_artifact(self, directory: Path, artifact: Artifact):
        session = self.session(str(directory / artifact.main))
        return lambda x: session.run(None, {artifact.input_name: x})[0]
