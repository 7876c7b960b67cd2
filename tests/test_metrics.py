"""The agreement metrics (ofa_deploy/metrics): Kendall tau, MAPE, RMSE, the linear fit and the within-x% share."""

import numpy as np
import pytest

from ofa_deploy.metrics import agreement, fit_linear, kendall_tau, mape, rmse, within


def test_kendall_tau_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(60)
    y = x + rng.standard_normal(60) * 0.5
    y[:5] = y[5]  # ties
    assert kendall_tau(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic)


def test_basic_metrics():
    measured = np.array([10.0, 10.0, 10.0, 10.0])
    predicted = np.array([10.4, 9.0, 12.0, 10.0])
    assert within(predicted, measured, 0.05) == 0.5
    assert within(predicted, measured, 0.10) == 0.75
    assert mape(predicted, measured) == pytest.approx((0.04 + 0.1 + 0.2 + 0) / 4)
    assert rmse(predicted, measured) == pytest.approx(np.sqrt((0.16 + 1 + 4) / 4))
    doc = agreement(predicted, measured)
    assert set(doc) == {"rmse_ms", "mape", "kendall_tau", "acc5", "acc10"}


def test_fit_linear_recovers_line():
    x = np.linspace(1, 10, 20)
    slope, intercept = fit_linear(x, 1.3 * x - 0.7)
    assert slope == pytest.approx(1.3) and intercept == pytest.approx(-0.7)


def test_calibration_falls_back_to_a_ratio_when_the_line_is_unphysical():
    from ofa_deploy.latency.validation import fit_calibration

    # a falling line (noise on two points) would make larger networks faster
    slope, intercept = fit_calibration(np.array([4.0, 5.0]), np.array([6.0, 5.5]))
    assert slope == pytest.approx(np.median([6.0 / 4.0, 5.5 / 5.0])) and intercept == 0.0
    # a steep line whose intercept makes the smallest network negative
    predicted, measured = np.array([1.0, 1.2, 3.0, 3.1]), np.array([0.3, 0.2, 2.0, 9.0])
    slope, intercept = fit_calibration(predicted, measured)
    assert intercept == 0.0 and slope == pytest.approx(np.median(measured / predicted))
    # a line that is positive over the samples but not for the fastest network the table reaches
    line = np.array([3.0, 4.0, 5.0])
    assert fit_calibration(line, 3 * line - 8) == pytest.approx((3.0, -8.0))  # fine over the samples alone
    slope, intercept = fit_calibration(line, 3 * line - 8, smallest=2.0)
    assert intercept == 0.0 and slope == pytest.approx(np.median((3 * line - 8) / line))
    # an ordinary fit is kept as it is
    assert fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([1.6, 2.7, 3.8])) == pytest.approx((1.1, 0.5))
