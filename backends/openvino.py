"""Intel CPU through the OpenVINO CPU plugin, float32 precision (the default bf16 hint differs by 1e-3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import OPENVINO_IR, Artifact
from ofa_deploy.backend.interface import LocalRuntimeBackend, require_module
from ofa_deploy.backend.settings import BackendSettings, setting
from ofa_deploy.graph.ir import Graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes

MODEL_FILES = ["model.xml", "model.bin"]


@dataclass(frozen=True)
class OpenVinoSettings(BackendSettings):
    """Settings of the openvino backend: the OpenVINO device the models are compiled for."""

    device: str = setting("CPU", "OpenVINO device name")


class OpenVinoBackend(LocalRuntimeBackend):
    """Intel CPU through OpenVINO, float32 with the latency hint; bundles hold the IR (``model.xml``, ``model.bin``)."""

    name = "openvino"
    extra = "openvino"
    description = "Intel CPU, OpenVINO CPU plugin (f32)"
    artifact_kinds = (OPENVINO_IR,)
    Settings = OpenVinoSettings
    settings: OpenVinoSettings

    def _ov(self):
        return require_module(self.name, self.extra, "openvino")

    def runtime_info(self) -> dict[str, str]:
        ov = self._ov()
        return {"runtime": "openvino", "runtime_version": ov.get_version()}

    def compile_model(self, model):
        """Compile an ``ov.Model`` for this backend's device with latency-oriented, f32 settings."""
        ov = self._ov()
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.timing.threads,
            "NUM_STREAMS": 1,
        }
        return core.compile_model(model, self.settings.device, config)

    def read_onnx(self, onnx_bytes: bytes):
        return self._ov().Core().read_model(onnx_bytes, b"")

    def load(self, graph: Graph) -> Callable[[], Any]:
        compiled = self.compile_model(self.read_onnx(to_onnx_bytes(graph)))
        request = compiled.create_infer_request()
        x = np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)
        request.set_input_tensor(self._ov().Tensor(x))
        return request.infer

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        """OpenVINO IR (model.xml + model.bin), float32 weights."""
        ov = self._ov()
        ov.save_model(self.read_onnx(to_onnx_bytes(graph)), str(directory / MODEL_FILES[0]), compress_to_fp16=False)
        return Artifact(
            OPENVINO_IR, list(MODEL_FILES), "input", list(graph.input_shape), "NCHW", "output", list(graph.output_shape)
        )

    def load_artifact(self, directory: Path, artifact: Artifact):
        ov = self._ov()
        compiled = self.compile_model(ov.Core().read_model(str(directory / artifact.main)))
        request = compiled.create_infer_request()

        def run(x):
            request.set_input_tensor(ov.Tensor(x))
            request.infer()
            return request.get_output_tensor().data.copy()

        return run
