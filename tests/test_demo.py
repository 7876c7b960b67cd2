"""The main job end to end, with fast timing so it fits in the test suite."""

import json
import os
import subprocess
import sys

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.search.predictors import load_accuracy_predictor
from ofa_deploy.space.arch import Arch

FAST_PROFILE = """name: fast-host
description: host CPU through ONNX Runtime, few timing rounds (tests only)
backend: onnxruntime
timing: {threads: 1, warmup: 1, rounds: 3, runs: 4}
"""


def test_demo_runs_end_to_end_and_reuses_its_table(tmp_path, capsys):
    device = tmp_path / "fast.yaml"
    device.write_text(FAST_PROFILE)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--device", str(device), "--resolutions", "128", "--samples", "6"]
    args += ["--generations", "30", "--json"]
    # as a user runs it: a fresh process with an empty home, where nothing may land outside --out
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPL"))} | {"HOME": str(home)}
    run = subprocess.run(
        [sys.executable, "-m", "ofa_deploy.cli.main", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert list(home.iterdir()) == []
    report = (out / "report.md").read_text()
    assert "Measured vs predicted" in report and "validation/scatter.png" in report and "search/pareto.png" in report
    assert "proxy for accuracy" in report  # no predictor given: labelled as a proxy
    assert (out / "validation" / "scatter.png").exists() and (out / "search" / "pareto.png").exists()
    assert len(doc["bundles"]) == 3
    for bundle in doc["bundles"]:
        manifest = json.loads((out / bundle["path"] / "manifest.json").read_text())
        assert manifest["measurements"] and manifest["predicted_latency"]["ms"] == bundle["predicted_ms"]
        assert f"{bundle['measured_ms']:.3f}" in report
    lut = next(out.glob("*.lut.json"))
    assert doc["facts"]["lut_reused"] is False
    # a second run reuses the cached table instead of profiling again; it validates and calibrates the table
    # again, which on a loaded host moved the fastest sub-network above the first run's middle budget once:
    # budgets with headroom over the first run's largest keep this about reuse, not about the calibration
    largest = doc["facts"]["budgets"][-1]
    budgets = f"{2 * largest:g},{3 * largest:g}"
    assert main([*args[:-1], "--budgets", budgets]) == 0
    err = capsys.readouterr().err
    assert f"reusing {lut}" in err and "compiling 2 bundles" in err
    assert "reused from the cache" in (out / "report.md").read_text()


def test_demo_with_accuracy_predictor(reference_dir, tmp_path, capsys):
    """With the official predictor, the demo searches for predicted top-1: every bundle holds the
    winner of its budget, whose score is the predictor's for that sub-network and whose predicted
    latency meets the budget; the report says top-1, not a proxy."""
    device = tmp_path / "fast.yaml"
    device.write_text(FAST_PROFILE)
    out = tmp_path / "demo"
    predictor_path = reference_dir / "acc_predictor.pth"
    args = ["demo", "--out", str(out), "--device", str(device), "--resolutions", "160", "--samples", "4"]
    args += ["--generations", "20", "--width-mult", "1.2", "--accuracy-predictor", str(predictor_path), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["facts"]["objective"] == "predicted top-1 accuracy" and doc["facts"]["proxy"] is False
    predictor = load_accuracy_predictor(predictor_path)
    budgets = doc["facts"]["budgets"]
    assert [b["budget_ms"] for b in doc["bundles"]] == budgets and len(budgets) == 3
    for bundle in doc["bundles"]:
        manifest = json.loads((out / bundle["path"] / "manifest.json").read_text())
        arch = Arch.from_dict(manifest["arch"])
        assert str(arch) == bundle["arch"] and manifest["width_mult"] == 1.2 and arch.r == 160
        assert bundle["score"] == pytest.approx(predictor.predict(arch), abs=1e-6)
        assert 0.70 < bundle["score"] < 0.85  # the official w1.2 predictor's range at r=160
        assert bundle["predicted_ms"] <= bundle["budget_ms"] * (1 + 1e-9)  # the search kept within its budget
        searched = json.loads((out / "search" / f"arch-{bundle['budget_ms']:g}ms.json").read_text())
        assert searched["accuracy"] == pytest.approx(bundle["score"])
    report = (out / "report.md").read_text()
    assert "predicted top-1" in report and "proxy" not in report
    for bundle in doc["bundles"]:  # the report's table row of each bundle: its score and both latencies
        row = next(line for line in report.splitlines() if line.startswith(f"| {bundle['budget_ms']:g} |"))
        assert f"| {bundle['score']:.2%} |" in row and f"| {bundle['predicted_ms']:.3f} |" in row, row
