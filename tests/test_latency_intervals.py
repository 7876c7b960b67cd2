"""Latency intervals and tail bounds (ofa_deploy/latency/intervals.py): split conformal factors that
validate learns and stores in the LUT, that predict prints and that search --quantile holds a
deadline to."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.latency.intervals import LatencyIntervals, conformal_rank
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.arch import largest_arch, smallest_arch

FAST = ["--rounds", "2", "--runs", "5", "--no-progress"]


def _networks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Predictions, robust figures within ~5% of them, and run quantiles with a heavy tail."""
    predicted = rng.uniform(2, 20, n)
    robust = predicted * np.exp(rng.normal(0, 0.03, n))
    median = robust * rng.uniform(1.0, 1.05, n)
    p90 = median * rng.uniform(1.02, 1.2, n)
    return predicted, robust, {0.5: median, 0.9: p90, 0.99: p90 * rng.uniform(1.0, 1.6, n)}


def test_conformal_factors_cover_new_networks_at_their_level():
    rng = np.random.default_rng(0)
    assert conformal_rank(10, 0.9) == 10 and conformal_rank(99, 0.9) == 90 and conformal_rank(3, 0.99) == 3
    coverage = []
    for _ in range(40):  # the guarantee is on average over calibration draws
        intervals = LatencyIntervals.fit(*_networks(rng, 50))
        assert intervals.low < 1 < intervals.high
        assert intervals.upper["0.5"] <= intervals.upper["0.9"] <= intervals.upper["0.99"]
        held = intervals.with_coverage(*_networks(rng, 200))
        coverage.append([held.coverage[k] for k in ("interval", "0.5", "0.9", "0.99")])
    mean = np.mean(coverage, axis=0)
    assert np.all(mean >= 0.87) and np.all(mean <= 0.97), mean  # nominal 0.9; >= 0.9 - sampling noise


def test_intervals_round_trip_and_bad_records_are_one_line():
    intervals = LatencyIntervals.fit(*_networks(np.random.default_rng(1), 12))
    again = LatencyIntervals.from_dict(json.loads(json.dumps(intervals.to_dict())), "t.json: calibration")
    assert again == intervals and again.bound(10.0, 0.99) == pytest.approx(10.0 * intervals.upper["0.99"])
    with pytest.raises(BadInputError, match="--quantile 0.75"):
        intervals.factor(0.75)
    for bad in ({**intervals.to_dict(), "low": -1}, {**intervals.to_dict(), "upper": {}}, [], {"level": 2}):
        with pytest.raises(BadInputError, match="t.json"):
            LatencyIntervals.from_dict(bad, "t.json: calibration")


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """An onnxruntime table at r=128, validated on 12 networks (intervals learned on 6, checked on 6)."""
    where = tmp_path_factory.mktemp("intervals")
    lut = where / "host.json"
    assert main(["profile", "--backend", "onnxruntime", "--resolutions", "128", "--out", str(lut), *FAST]) == 0
    raw = where / "raw.json"
    raw.write_bytes(lut.read_bytes())  # a copy that is never validated
    assert main(["validate", "--lut", str(lut), "--samples", "12", "--out", str(where / "v"), *FAST]) == 0
    (where / "small.json").write_text(json.dumps(smallest_arch(128).to_dict()))
    (where / "large.json").write_text(json.dumps(largest_arch(128).to_dict()))
    return where


def test_validate_stores_intervals_with_their_held_out_coverage(validated):
    report = json.loads((validated / "v" / "report.json").read_text())
    intervals = load_lut(validated / "host.json").calibration.intervals
    assert intervals is not None and intervals.to_dict() == report["intervals"]
    assert intervals.fitted_on == 6 and intervals.held_out == 6 and intervals.level == 0.9
    assert set(intervals.coverage) == {"interval", "0.5", "0.9", "0.99"}
    assert all(0 <= v <= 1 for v in intervals.coverage.values())
    assert intervals.upper["0.5"] <= intervals.upper["0.9"] <= intervals.upper["0.99"]  # per network p50 <= p99
    entry = next(iter(load_lut(validated / "host.json").tables[128].values()))
    assert entry["median"] <= entry["p90"] <= entry["p99"] and entry["count"] == 10  # every entry: its runs' tail


def test_predict_prints_the_interval_and_the_tail_bounds(validated, capsys):
    capsys.readouterr()
    assert main(["predict", "--lut", str(validated / "host.json"), "--arch", str(validated / "large.json")]) == 0
    out = capsys.readouterr().out
    assert "(90%: " in out and "run-to-run tail (90% bounds): p50 <= " in out and "p99 <= " in out
    args = ["predict", "--lut", str(validated / "host.json"), "--arch", str(validated / "large.json"), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    interval = doc["interval"]
    assert interval["low_ms"] < doc["latency_ms"] < interval["high_ms"]
    assert interval["upper_ms"]["0.99"] >= interval["upper_ms"]["0.9"] >= interval["upper_ms"]["0.5"]


def test_search_holds_the_deadline_to_a_quantile_bound(validated, tmp_path, capsys):
    lut = str(validated / "host.json")
    capsys.readouterr()
    bounds = []
    for arch in ("small.json", "large.json"):
        assert main(["predict", "--lut", lut, "--arch", str(validated / arch), "--json"]) == 0
        bounds.append(json.loads(capsys.readouterr().out)["interval"]["upper_ms"]["0.99"])
    # between the smallest network's p99 bound (so something fits, however heavy this machine's tail)
    # and the largest's (so the bound binds)
    limit = round((bounds[0] + bounds[1]) / 2, 4)
    common = ["search", "--lut", lut, "--latency-ms", f"{limit:.4f}", "--generations", "20", "--no-progress"]
    assert main([*common, "--quantile", "0.99", "--out", str(tmp_path / "p99.json"), "--json"]) == 0
    tail = json.loads(capsys.readouterr().out)
    [name] = tail["latency_ms"]  # the table's name in the results
    bound, margin = tail["quantile"]["bound_ms"][name], tail["quantile"]["margin_ms"][name]
    factor = load_lut(lut).calibration.intervals.upper["0.99"]
    assert bound == pytest.approx(tail["latency_ms"][name] * factor) and bound <= limit
    assert margin == pytest.approx(limit - bound) and margin >= 0
    assert main([*common, "--out", str(tmp_path / "typical.json"), "--json"]) == 0
    typical = json.loads(capsys.readouterr().out)
    assert typical["latency_ms"][name] <= limit and "quantile" not in typical
    # the tail costs headroom: the typical figure of the p99-held pick leaves room the median search uses
    assert tail["latency_ms"][name] <= limit / factor + 1e-9
    capsys.readouterr()
    raw = ["search", "--lut", str(validated / "raw.json"), "--latency-ms", "50", "--quantile", "0.99"]
    assert main([*raw, "--out", str(tmp_path / "x.json")]) == 2
    assert "holds no latency intervals" in capsys.readouterr().err
