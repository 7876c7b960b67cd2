"""The files of ``ofa-deploy validate``: its report, the measurements as CSV and the scatter plot of
predicted vs measured latency (:func:`ofa_deploy.latency.validation.validate` computes them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ofa_deploy.files import atomic_text_file, atomic_write_json, finite_json
from ofa_deploy.latency.validation import ValidationResult
from ofa_deploy.reports.fidelity_plot import FidelitySeries, plot_fidelity


def write_outputs(result: ValidationResult, out_dir: Path) -> dict[str, Path]:
    """``report.json`` (strict JSON: a NaN tau is null), ``measurements.csv`` (one row per sub-network)
    and ``scatter.png`` in ``out_dir``; their paths by name (``report``, ``csv``, ``plot``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / "report.json", "csv": out_dir / "measurements.csv", "plot": out_dir / "scatter.png"}
    atomic_write_json(paths["report"], finite_json(result.report.to_dict()), indent=2)
    with atomic_text_file(paths["csv"]) as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "arch_hash",
                "r",
                "predicted_ms",
                "calibrated_ms",
                "measured_ms",
                "measured_raw_ms",
                "measured_std_ms",
                "split",
                "arch",
            ]
        )
        for i, arch in enumerate(result.archs):
            writer.writerow(
                [
                    arch.stable_hash(),
                    arch.r,
                    f"{result.predicted[i]:.5f}",
                    f"{result.calibration.apply(result.predicted[i]):.5f}",
                    f"{result.measured[i]:.5f}",
                    f"{result.measured_raw[i]:.5f}",
                    f"{result.measured_std[i]:.5f}",
                    "fit" if result.fit_mask[i] else "held_out",
                    json.dumps(arch.to_dict(), separators=(",", ":")),
                ]
            )
    plot_scatter(result, paths["plot"])
    return paths


def plot_scatter(result: ValidationResult, path: Path) -> None:
    """LUT sum and calibrated prediction vs measured, with the ±5/±10% bands (held-out half in blue)."""
    held = ~result.fit_mask
    panels = [
        FidelitySeries(f"{result.report.backend}: LUT sum (uncalibrated)", result.measured, result.predicted, held),
        FidelitySeries(
            f"{result.report.backend}: calibrated", result.measured, result.calibration.apply(result.predicted), held
        ),
    ]
    plot_fidelity(panels, path, title=f"{result.report.backend}: {result.report.samples} sub-networks")
