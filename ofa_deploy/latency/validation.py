"""Check a latency table against end-to-end measurements and fit its calibration.

Sample N sub-networks (seeded), build each whole network, measure it on the backend with the
same timing protocol as the table's entries (normalised by the table's reference operator when it
has one), and compare with the table's prediction. Half of the
samples fit ``measured ≈ slope · predicted + intercept``; the other half, held out, gives the
before/after figures. The fitted calibration is stored in the table so later predictions use it.
Its files (report, CSV, scatter plot) are written by :mod:`ofa_deploy.reports.validation`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ofa_deploy.backend.fingerprint import check_same_target, fingerprint_of_backend
from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.progress import measuring
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.latency.intervals import QUANTILES, LatencyIntervals
from ofa_deploy.latency.measurements import Measurement
from ofa_deploy.latency.metadata import utc_now
from ofa_deploy.latency.profiling import table_reference
from ofa_deploy.latency.table import Calibration, LatencyTable
from ofa_deploy.metrics import agreement, fit_linear
from ofa_deploy.space.arch import Arch, ArchBatch, sample_batch
from ofa_deploy.space.ops import arch_ops

MIN_SAMPLES = 4


@dataclass
class ValidationReport:
    """What ``validate`` reports (its ``--json`` document and ``report.json``): the sample, the target,
    the calibration, and the agreement of predicted with measured latency (``agreement()`` metrics:
    acc5, acc10, MAPE, Kendall tau, ...) on the held-out half before and after calibrating, on all
    samples before, and after calibrating against the raw (not reference-normalised) timings."""

    samples: int
    backend: str
    runtime: dict[str, str]
    lut: str
    width_mult: float
    resolutions: list[int]
    seed: int
    held_out: int
    calibration: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    all_before: dict[str, float]
    normalised_by_reference: bool
    raw_after: dict[str, float]
    target: dict[str, Any]  # TargetFingerprint.to_dict() of the target measured on
    target_mismatch_allowed: list[str]  # differences from the LUT's target, measured anyway (--allow-target-mismatch)
    intervals: dict[str, Any] | None = None  # LatencyIntervals.to_dict(): conformal factors and held-out coverage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationResult:
    """What validate measured and fitted: per arch predicted and measured latencies, the calibration and the report."""

    archs: list[Arch]
    predicted: np.ndarray  # uncalibrated
    measured: np.ndarray  # in the table's time units (reference-normalised) when it has a reference
    measured_raw: np.ndarray  # wall-clock, no normalisation
    measured_std: np.ndarray
    fit_mask: np.ndarray  # True: used to fit the calibration; False: held out
    calibration: Calibration
    report: ValidationReport


def fit_calibration(predicted: np.ndarray, measured: np.ndarray, smallest: float | None = None) -> tuple[float, float]:
    """``measured ≈ slope · predicted + intercept``, or a plain ratio when the line is unphysical.

    With few or noisy samples a least-squares line can fall as the table's sum grows, or go negative
    for the smallest networks (seen with 2 fit points: -3.1 ms for the smallest sub-network); a
    calibration must keep larger networks slower and every prediction positive, down to
    ``smallest`` (the table's fastest reachable sum), so such fits fall back to
    ``measured ≈ ratio · predicted``.
    """
    slope, intercept = fit_linear(predicted, measured)
    floor = float(np.min(predicted)) if smallest is None else min(smallest, float(np.min(predicted)))
    if slope <= 0 or slope * floor + intercept <= 0:
        return float(np.median(np.asarray(measured) / np.asarray(predicted))), 0.0
    return slope, intercept


def sample_archs(table: LatencyTable, n: int, seed: int) -> list[Arch]:
    """``n`` distinct archs (the first of ``2n`` seeded draws) at the table's resolutions; BadInputError below 4."""
    if n < MIN_SAMPLES:
        raise BadInputError(f"--samples must be at least {MIN_SAMPLES} (half fit the calibration, half check it)")
    batch = sample_batch(np.random.default_rng(seed), n * 2, resolutions=table.resolutions)
    unique = batch[batch.unique_rows()]
    return unique.to_archs()[:n]


def validate(
    table: LatencyTable,
    backend: Backend,
    n_samples: int,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
    allow_target_mismatch: bool = False,
) -> ValidationResult:
    """Measure ``n_samples`` sampled sub-networks on ``backend``, compare with the table's sums and fit a calibration
    on half of them (the other half is held out for the report). The caller stores the calibration.
    ``device``: the device profile the backend was configured from. A table made on another target is
    refused before anything is measured, unless ``allow_target_mismatch`` (then the report notes it)."""
    here = fingerprint_of_backend(backend, device, backend.check())
    source = f"the LUT {table.source}"
    mismatch = check_same_target(
        source, table.metadata.fingerprint(), "this validation's target", here, allow_target_mismatch
    )
    archs = sample_archs(table, n_samples, seed)
    w = table.width_mult
    predicted = table.predict_batch(ArchBatch.from_archs(archs), calibrated=False)  # fails early on a missing key
    reference = table_reference(backend, table)
    measured, raw, spread = [], [], []
    run_quantiles: dict[float, list[float]] = {q: [] for q in QUANTILES}  # of all runs, in table units
    from tqdm import tqdm

    step = max(1, backend.batch_size)  # a remote device times a whole batch of networks per round trip
    with tqdm(total=len(archs), desc="validating", unit="net", disable=not progress or None, file=sys.stderr) as bar:
        for start in range(0, len(archs), step):
            chunk = archs[start : start + step]
            with measuring(backend, bar, len(chunk)):
                results = backend.measure_networks([build_graph(arch_ops(a, w)) for a in chunk], reference)
            for stats in results:
                measured.append(stats.estimate)
                raw.append(stats.raw_estimate)
                spread.append(stats.std)
                if stats.measured:  # timed: its runs' distribution, normalised as the estimate is
                    scale = stats.estimate / stats.raw_estimate if stats.raw_estimate > 0 else 1.0
                    for q, value in ((0.5, stats.median), (0.9, stats.p90), (0.99, stats.p99)):
                        run_quantiles[q].append(value * scale)
    measured_arr = np.asarray(measured)
    fit_mask = np.zeros(len(archs), dtype=bool)
    fit_mask[np.random.default_rng(seed + 1).permutation(len(archs))[: len(archs) // 2]] = True
    fastest, _ = table.compiled().slot_table.minimum()
    slope, intercept = fit_calibration(predicted[fit_mask], measured_arr[fit_mask], fastest)
    calibration = Calibration(slope, intercept, fitted_on=int(fit_mask.sum()), backend=backend.name, date=utc_now())
    held = ~fit_mask
    intervals = None
    if len(run_quantiles[0.5]) == len(archs):  # a cost model's estimates have no run distribution
        q = {k: np.asarray(v) for k, v in run_quantiles.items()}
        calibrated = np.asarray(calibration.apply(predicted))
        fit_q, held_q = {k: v[fit_mask] for k, v in q.items()}, {k: v[held] for k, v in q.items()}
        intervals = LatencyIntervals.fit(calibrated[fit_mask], measured_arr[fit_mask], fit_q)
        intervals = intervals.with_coverage(calibrated[held], measured_arr[held], held_q)
        calibration = dataclasses.replace(calibration, intervals=intervals)
    report = ValidationReport(
        samples=len(archs),
        backend=backend.name,
        runtime=backend.runtime_info(),
        lut=table.source,
        width_mult=w,
        resolutions=list(table.resolutions),
        seed=seed,
        held_out=int(held.sum()),
        calibration=calibration.to_dict(),
        before=agreement(predicted[held], measured_arr[held]),
        after=agreement(calibration.apply(predicted[held]), measured_arr[held]),
        all_before=agreement(predicted, measured_arr),
        normalised_by_reference=reference is not None,
        raw_after=agreement(calibration.apply(predicted[held]), np.asarray(raw)[held]),
        target=here.to_dict(),
        target_mismatch_allowed=mismatch,
        intervals=None if intervals is None else intervals.to_dict(),
    )
    return ValidationResult(
        archs, predicted, measured_arr, np.asarray(raw), np.asarray(spread), fit_mask, calibration, report
    )


def measurements_of(result: ValidationResult) -> list[Measurement]:
    """What validate measured, as ``M.jsonl`` records for ``ofa-deploy fit`` (``latency_ms`` in the
    table's time units, as the calibration used it; the wall-clock figure and spread alongside)."""
    backend = result.report.backend
    return [
        Measurement(
            arch,
            float(result.measured[i]),
            {
                "raw_latency_ms": float(result.measured_raw[i]),
                "std_ms": float(result.measured_std[i]),
                "backend": backend,
                "width_mult": result.report.width_mult,
                "target": result.report.target,
            },
        )
        for i, arch in enumerate(result.archs)
    ]
