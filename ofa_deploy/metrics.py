"""Agreement between predicted and measured values (latency here, accuracy for predictors)."""

from __future__ import annotations

import numpy as np


def rmse(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Root-mean-square error, in the values' unit."""
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(measured)) ** 2)))


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error as a fraction (0.05 = 5%)."""
    measured = np.asarray(measured, dtype=np.float64)
    return float(np.mean(np.abs(np.asarray(predicted) - measured) / measured))


def within(predicted: np.ndarray, measured: np.ndarray, tolerance: float) -> float:
    """Share of samples whose prediction is within ±tolerance (relative) of the measurement
    (nn-Meter's acc5 / acc10 for tolerance 0.05 / 0.10), as a fraction."""
    measured = np.asarray(measured, dtype=np.float64)
    return float(np.mean(np.abs(np.asarray(predicted) - measured) <= tolerance * measured))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties handled), O(n^2) vectorised: fine for the few hundred samples used here."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    i, j = np.triu_indices(x.size, k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordance = float(np.sum(dx * dy))
    n_x, n_y = float(np.sum(dx != 0)), float(np.sum(dy != 0))
    if n_x == 0 or n_y == 0:
        return float("nan")
    return concordance / np.sqrt(n_x * n_y)


def agreement(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """How well latency predictions match measurements: RMSE (ms), MAPE, Kendall tau, acc5 and acc10 (fractions)."""
    return {
        "rmse_ms": rmse(predicted, measured),
        "mape": mape(predicted, measured),
        "kendall_tau": kendall_tau(predicted, measured),
        "acc5": within(predicted, measured, 0.05),
        "acc10": within(predicted, measured, 0.10),
    }


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ≈ slope · x + intercept``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return float(np.mean(y / np.maximum(x, 1e-12))), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)
