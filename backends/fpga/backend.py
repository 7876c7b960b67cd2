"""Xilinx DPU (DPUCZDX8G) FPGA accelerators through an analytical cost model: no hardware needed.

Profiles fill a latency table for every resolution in seconds (values are estimates, recorded as
such), ``estimate`` answers for any ONNX CNN, and ``compile`` writes the sub-network's ONNX with
its cost report. Producing an ``.xmodel`` for a board needs the vendor's quantizer and compiler
(Vitis AI), which are not installable from PyPI; the bundle is the input to that step. The model,
its parameters and its blind spots: docs/fpga.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.backend.artifact import COST_REPORT, Artifact
from ofa_deploy.backend.diagnosis import Finding, Verdict
from ofa_deploy.backend.interface import Alternative, AnalyticalBackend, CliOption, DesignSpace, LayerEstimate
from ofa_deploy.backend.quantization import check_precision
from ofa_deploy.backend.settings import BackendSettings, setting
from ofa_deploy.backend.timing import LatencyEstimate, Reference
from ofa_deploy.backends.fpga.model import (
    ARCHITECTURES,
    MODEL_VERSION,
    CostReport,
    DpuConfig,
    FittedParameters,
    estimate_layers,
)
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import Graph
from ofa_deploy.graph.layers import Layer, layers_from_graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes

REPORT_FILE, MODEL_FILE = "cost_report.json", "model.onnx"


@dataclass(frozen=True)
class FpgaSettings(BackendSettings):
    """Settings of the fpga backend: the DPU as deployed (size, cores, clock, DDR) and the hard-swish choice."""

    arch: str = setting("B4096", f"DPU architecture: {', '.join(ARCHITECTURES)}")
    cores: int = setting(1, "DPU cores in the design (batch-1 latency uses one; throughput uses all)")
    clock_mhz: float = setting(300.0, "DPU clock in MHz")
    ddr_gbs: float = setting(17.1, "the board's DDR bandwidth in GB/s (theoretical peak, shared by the cores)")
    hard_swish: str = setting(
        "cpu",
        "what happens to hard-swish/hard-sigmoid, which this DPU family lacks: 'cpu' (ARM fall-back, the default) "
        "or 'relu6' (the ReLU6-based substitute, a model change that needs fine-tuning)",
    )

    precision: str = setting("int8", "int8: the DPU runs int8 only")

    def validate(self) -> None:
        check_precision("fpga", self.precision, ("int8",), "the DPU runs int8 only")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch: must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if not 1 <= self.cores <= 4:
            raise ValueError("cores: a DPUCZDX8G IP has 1 to 4 cores")
        if self.clock_mhz <= 0 or self.ddr_gbs <= 0:
            raise ValueError("clock_mhz and ddr_gbs: must be positive")
        if self.hard_swish not in ("cpu", "relu6"):
            raise ValueError(f"hard_swish: 'cpu' or 'relu6', got {self.hard_swish!r}")


class FpgaBackend(AnalyticalBackend, DesignSpace):
    """The DPUCZDX8G by analytical cost model: estimates, no timing; bundles hold the ONNX and its cost report."""

    name = "fpga"
    description = "Xilinx DPUCZDX8G FPGA accelerator, analytical cost model (int8, batch 1)"
    extra = ""  # pure Python
    artifact_kinds = (COST_REPORT,)
    Settings = FpgaSettings
    settings: FpgaSettings
    default_profile = "dpu-b4096"
    cli_options = (
        CliOption("--dpu-arch", "arch", f"DPU architecture ({'/'.join(ARCHITECTURES)})", metavar="B4096"),
        CliOption("--hard-swish", "hard_swish", "'cpu' (ARM fall-back) or 'relu6' (substitute)", metavar="MODE"),
    )

    def design_variants(self) -> list[tuple[dict[str, Any], FpgaBackend]]:
        """Every DPU size with one to four cores (``estimate --sweep-dpu``), other settings as this one's."""
        designs = [{"arch": arch, "cores": cores} for arch in ARCHITECTURES for cores in (1, 2, 3, 4)]
        return [(design, self.reconfigured(settings_source="--sweep-dpu", **design)) for design in designs]

    @property
    def config(self) -> DpuConfig:
        s = self.settings
        return DpuConfig(s.arch, s.cores, s.clock_mhz, s.ddr_gbs, s.hard_swish)

    @property
    def parameters(self) -> FittedParameters:
        if not hasattr(self, "_parameters"):
            self._parameters = FittedParameters.load()
        return self._parameters

    def runtime_info(self) -> dict[str, str]:
        return {"runtime": "DPUCZDX8G cost model", "runtime_version": MODEL_VERSION}

    def diagnose_target(self) -> list[Finding]:
        """A model needs nothing but itself: what it is, and what it can and cannot give."""
        c = self.config
        return [
            Finding("design", Verdict.OK, f"{c.arch} x{c.cores} @ {c.clock_mhz:g} MHz, DDR {c.ddr_gbs:g} GB/s"),
            Finding(
                "gives",
                Verdict.INFO,
                "int8 batch-1 latency estimates of any ONNX CNN or sub-network (LUTs, search, estimate, "
                "--sweep-dpu), fitted to vendor model-zoo figures (docs/fpga.md)",
            ),
            Finding(
                "cannot give",
                Verdict.INFO,
                "measurements: nothing runs on a board, so no benchmark or verification of a bundle; depthwise "
                f"layers are priced by memory traffic and overhead (depthwise_efficiency at its bound); hard-swish "
                f"{'runs on the ARM core' if c.hard_swish == 'cpu' else 'is priced as ReLU6'}",
            ),
        ]

    def check(self) -> dict[str, object]:
        c = self.config
        return {
            **self.runtime_info(),
            "threads": 1,
            "target": f"{c.arch} x{c.cores} @ {c.clock_mhz:g} MHz, DDR {c.ddr_gbs:g} GB/s, hard-swish: {c.hard_swish}",
            "peak_gops_per_core": round(c.peak_gops, 1),
            "parameters": self.parameters.values(),
        }

    # ------------------------------------------------------------------ the model
    def estimate_layers(self, layers: list[Layer]) -> CostReport:
        """The cost report of any layer list (an ONNX model read by ``layers_from_onnx``, a graph)."""
        return estimate_layers(layers, self.config, self.parameters)

    def alternatives(self, layers: list[Layer], report: LayerEstimate) -> list[Alternative]:
        """Hard-swish on the ARM core (the default) against the ReLU6 substitute, when the model has any."""
        hard = {"HardSwish", "HardSigmoid"}
        if self.settings.hard_swish != "cpu" or not any(
            c["engine"] == "cpu" and c["source_op"] in hard for c in report.to_dict()["layers"]
        ):
            return []
        substitute = self.reconfigured(settings_source="--hard-swish relu6", hard_swish="relu6")
        what = "hard-swish/hard-sigmoid as their ReLU6 substitutes on the DPU (changes the network: check its accuracy)"
        return [Alternative("--hard-swish relu6", what, substitute.estimate_layers(layers).latency_ms, "cpu")]

    def estimate(self, graph: Graph) -> float:
        return self.estimate_layers(layers_from_graph(graph)).latency_ms

    def invocation_overhead_ms(self) -> float:
        return self.parameters.invocation_overhead_ms

    # ------------------------------------------------------------------ bundles
    def compile(self, graph: Graph, directory: Path) -> Artifact:
        """The cost report (main file) and the sub-network's ONNX, the input to the vendor's quantizer."""
        report = self.estimate_layers(layers_from_graph(graph))
        (directory / MODEL_FILE).write_bytes(to_onnx_bytes(graph))
        (directory / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
        details = {"estimated_ms": report.latency_ms, "dpu": self.check()["target"], "xmodel": "not built"}
        return Artifact.of_graph(COST_REPORT, [REPORT_FILE, MODEL_FILE], graph, details)

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyEstimate:
        """Re-estimate the bundle's ONNX with this backend's DPU settings (an estimate, not a run)."""
        from ofa_deploy.graph.onnx_reader import layers_from_onnx

        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise BadInputError(f"{path}: the bundle's ONNX model is missing")
        report = self.estimate_layers(layers_from_onnx(path))
        return LatencyEstimate(report.latency_ms, f"{self.runtime_info()['runtime']} {MODEL_VERSION}")
