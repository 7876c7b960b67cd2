"""``predict --archs``, ``validate --save-measurements`` and the fidelity scatter plot.

The target is the fpga backend (an analytical model: real profile/validate code paths, no
hardware, under a second), so measure once -> fit -> predict runs end to end in the test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.latency.measurements import read_measurements
from ofa_deploy.reports.fidelity_plot import FidelitySeries, plot_fidelity
from ofa_deploy.space.arch import sample_batch


@pytest.fixture(scope="module")
def lut(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "fpga.json"
    assert main(["-q", "profile", "--backend", "fpga", "--resolutions", "160,176", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def archs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("archs") / "a.jsonl"
    archs = sample_batch(np.random.default_rng(3), 12, resolutions=(160, 176)).to_archs()
    path.write_text("".join(json.dumps(a.to_dict()) + "\n" for a in archs))
    return path


def test_batch_prediction_is_a_json_list_in_line_order_equal_to_single_predictions(lut, archs_file, tmp_path, capsys):
    assert main(["predict", "--lut", str(lut), "--archs", str(archs_file), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    lines = archs_file.read_text().splitlines()
    assert isinstance(listed, list) and len(listed) == len(lines)
    for line, item in zip(lines, listed):
        single = tmp_path / "one.json"
        single.write_text(line)
        assert main(["predict", "--lut", str(lut), "--arch", str(single), "--json"]) == 0
        one = json.loads(capsys.readouterr().out)
        assert item["latency_ms"] == pytest.approx(one["latency_ms"], rel=1e-9)
        assert item["r"] == json.loads(line)["r"]
    assert len({round(item["latency_ms"], 6) for item in listed}) > 1  # not one value repeated


def test_batch_prediction_reads_official_arch_layouts_and_prints_a_table(lut, tmp_path, capsys):
    path = tmp_path / "official.jsonl"
    arch = {"wid": None, "ks": [3] * 20, "e": [4] * 20, "d": [2] * 5}
    path.write_text(json.dumps({**arch, "r": [160]}) + "\n\n" + json.dumps({**arch, "image_size": 176}) + "\n")
    assert main(["predict", "--lut", str(lut), "--archs", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 sub-networks predicted" in out and " 160 " in out and " 176 " in out


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"ks": [3]}\n', ":1: arch field 'r'"),
        ('{"ks": [3]*20}\n', ":1: not valid JSON"),
        ("", "empty"),
    ],
)
def test_batch_prediction_bad_input_is_exit_2_naming_the_line(lut, archs_file, tmp_path, capsys, content, says):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main(["predict", "--lut", str(lut), "--archs", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and says in captured.err and len(captured.err.strip().splitlines()) == 1


def test_a_line_at_a_resolution_the_lut_lacks_is_exit_2(lut, tmp_path, capsys):
    path = tmp_path / "other_r.jsonl"
    path.write_text(json.dumps({"ks": [3] * 20, "e": [4] * 20, "d": [2] * 5, "r": 224}) + "\n")
    assert main(["predict", "--lut", str(lut), "--archs", str(path)]) == 2
    assert "224" in capsys.readouterr().err


def test_arch_and_archs_are_exclusive(lut, archs_file):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--lut", str(lut), "--arch", "x.json", "--archs", str(archs_file)])
    assert exc.value.code == 2


def test_measure_once_then_fit_then_predict(lut, tmp_path, capsys):
    saved = tmp_path / "m.jsonl"
    out = tmp_path / "val"
    args = ["validate", "--lut", str(lut), "--samples", "30", "--out", str(out), "--no-save", "--no-progress"]
    assert main([*args, "--save-measurements", str(saved)]) == 0
    capsys.readouterr()
    measurements, width = read_measurements(saved)
    report = json.loads((out / "report.json").read_text())
    assert len(measurements) == report["samples"] == 30 and width == 1.0
    assert {m.extra["backend"] for m in measurements} == {"fpga"}
    csv_measured = [float(line.split(",")[4]) for line in (out / "measurements.csv").read_text().splitlines()[1:]]
    assert [m.latency_ms for m in measurements] == pytest.approx(csv_measured, rel=1e-4)
    assert (out / "scatter.png").stat().st_size > 10_000

    fitted = tmp_path / "fitted.json"
    assert main(["fit", "--measurements", str(saved), "--out", str(fitted), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measurements"] == 30 and summary["resolutions"] == [160, 176]
    assert main(["predict", "--lut", str(fitted), "--archs", str(saved), "--json"]) == 0
    predicted = np.array([item["latency_ms"] for item in json.loads(capsys.readouterr().out)])
    measured = np.array([m.latency_ms for m in measurements])
    assert np.mean(np.abs(predicted / measured - 1) <= 0.10) >= 0.9


def test_fidelity_plot_has_one_panel_per_backend_with_both_bands(tmp_path):
    rng = np.random.default_rng(0)
    measured = rng.uniform(5, 20, 40)
    series = [
        FidelitySeries(name, measured, measured * (1 + rng.normal(0, s, 40)), held_out=np.arange(40) % 2 == 0)
        for name, s in (("onnxruntime", 0.01), ("openvino", 0.05), ("tflite", 0.08), ("adb", 0.2))
    ]
    assert series[0].accuracy()[1] == 1.0 and series[3].accuracy()[1] < 1.0
    path = tmp_path / "fidelity.png"
    plot_fidelity(series, path, title="four backends")
    from matplotlib.image import imread

    height, width_px = imread(path).shape[:2]
    assert width_px > height  # 3 columns x 2 rows
