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
