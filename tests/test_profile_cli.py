"""``profile``, ``predict`` and ``validate`` end to end, on real runtimes, with fast timing settings."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.arch import largest_arch
from ofa_deploy.space.ops import resolution_ops

FAST = ["--rounds", "2", "--runs", "3", "--no-progress"]
ARCH = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 4] * 5, "d": [2, 3, 4, 3, 2], "r": 128}


@pytest.fixture(scope="module")
def ort_lut(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "host.json"
    assert main(["profile", "--backend", "onnxruntime", "--resolutions", "128,132", "--out", str(out), *FAST]) == 0
    return out


def test_profile_writes_complete_table(ort_lut):
    table = load_lut(ort_lut)
    assert table.resolutions == [128, 132]
    for r in (128, 132):
        assert set(table.tables[r]) == {op.key for op in resolution_ops(r, 1.0)}
    meta = table.metadata
    for field in (
        "device",
        "backend",
        "runtime",
        "runtime_version",
        "threads",
        "width_mult",
        "resolutions",
        "date",
        "toolkit_version",
        "reference",
        "call_overhead_ms",
    ):
        assert getattr(meta, field) not in (None, []), field
    assert meta.backend == "onnxruntime" and meta.device == "host-cpu" and meta.measurement == "timed"
    record = next(iter(table.tables[128].values()))
    assert {"count", "mean", "std", "estimate"} <= set(record)
    # a key shared by both resolutions was measured once: the same record object content
    shared = "Logits-input:1x1x1280-output:1000"
    assert table.tables[128][shared] == table.tables[132][shared]


def test_quiet_profile_prints_only_warnings(tmp_path, capsys):
    out = tmp_path / "quiet.json"
    assert main(["-q", "profile", "--backend", "onnxruntime", "--resolutions", "128", "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if not line.startswith("warning:")] == []
    assert captured.out.startswith(f"wrote {out}")  # the result itself still goes to stdout


def test_profile_refuses_to_overwrite(ort_lut, capsys):
    before = ort_lut.read_text()
    assert main(["profile", "--backend", "onnxruntime", "--resolutions", "128", "--out", str(ort_lut), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    assert ort_lut.read_text() == before


def test_resume_with_other_settings_is_refused(ort_lut, capsys):
    code = main(
        [
            "profile",
            "--backend",
            "onnxruntime",
            "--resolutions",
            "128",
            "--threads",
            "2",
            "--out",
            str(ort_lut),
            "--resume",
            *FAST,
        ]
    )
    assert code == 2 and "threads" in capsys.readouterr().err


def test_predict_json_and_table(ort_lut, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    assert main(["predict", "--lut", str(ort_lut), "--arch", str(arch), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"latency_ms", "breakdown", "calibrated"}
    assert doc["calibrated"] is False
    table = load_lut(ort_lut)
    assert doc["latency_ms"] == pytest.approx(sum(doc["breakdown"].values()) + table.call_overhead_ms)
    assert main(["predict", "--lut", str(ort_lut), "--arch", str(arch)]) == 0
    assert "predicted latency" in capsys.readouterr().out


def test_predict_outside_lut_resolutions(ort_lut, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({**ARCH, "r": 224}))
    assert main(["predict", "--lut", str(ort_lut), "--arch", str(arch)]) == 2
    err = capsys.readouterr().err
    assert "resolution 224" in err and "ofa-deploy profile" in err


def test_predict_official_tutorial(reference_dir, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(
        json.dumps(
            {
                "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
                "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
                "d": [2, 2, 3, 4, 3],
                "r": 192,
            }
        )
    )
    assert main(["predict", "--lut", str(reference_dir / "note10"), "--arch", str(arch), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] == pytest.approx(24.730, abs=1e-3)


def test_validate_writes_report_and_calibrates(ort_lut, tmp_path, capsys):
    out = tmp_path / "val"
    assert main(["validate", "--lut", str(ort_lut), "--samples", "6", "--out", str(out), "--json", *FAST]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 6 and report["backend"] == "onnxruntime"
    for side in ("before", "after"):
        assert set(report[side]) == {"rmse_ms", "mape", "kendall_tau", "acc5", "acc10"}
        assert 0.0 <= report[side]["acc5"] <= report[side]["acc10"] <= 1.0
    assert (out / "scatter.png").stat().st_size > 10_000
    rows = (out / "measurements.csv").read_text().strip().splitlines()
    assert len(rows) == 7 and rows[0].startswith("arch_hash")
    table = load_lut(ort_lut)
    assert table.calibration is not None and table.calibration.fitted_on == 3
    assert table.calibration.slope == pytest.approx(report["calibration"]["slope"])


@pytest.mark.parametrize("backend", ["openvino", "tflite"])
def test_profile_and_validate_other_host_backends(backend, tmp_path, capsys):
    lut = tmp_path / f"{backend}.json"
    assert main(["profile", "--backend", backend, "--resolutions", "128", "--out", str(lut), *FAST]) == 0
    capsys.readouterr()
    assert main(["validate", "--lut", str(lut), "--samples", "4", "--out", str(tmp_path / "v"), "--json", *FAST]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == backend and report["runtime"]["runtime"]


def test_validate_needs_enough_samples(ort_lut, tmp_path, capsys):
    assert main(["validate", "--lut", str(ort_lut), "--samples", "2", "--out", str(tmp_path), *FAST]) == 2
    assert "at least 4" in capsys.readouterr().err


def test_validate_backend_mismatch(ort_lut, tmp_path, capsys):
    code = main(["validate", "--lut", str(ort_lut), "--backend", "tflite", "--samples", "4", "--out", str(tmp_path)])
    assert code == 2 and "measured with backend 'onnxruntime'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--resolutions", "130"], "--resolutions"),
        (["--resolutions", "abc"], "comma-separated"),
        (["--width-mult", "0.5"], "width multiplier"),
        (["--device", "nosuchphone"], "unknown device"),
        (["--backend", "nosuchbackend"], "unknown backend"),
        (["--device", "host-cpu", "--backend", "tflite"], "contradicts"),
    ],
)
def test_profile_bad_arguments(tmp_path, capsys, args, words):
    base = ["profile", "--out", str(tmp_path / "x.json")]
    if "--backend" not in args and "--device" not in args:
        base += ["--backend", "onnxruntime"]
    assert main(base + args + FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "x.json").exists()


def test_kill_mid_run_then_resume(tmp_path):
    """A real profiling process killed with SIGKILL mid-run; --resume completes the table."""
    out = tmp_path / "killed.json"
    cmd = [
        sys.executable,
        "-m",
        "ofa_deploy.cli.main",
        "profile",
        "--backend",
        "onnxruntime",
        "--resolutions",
        "128,132,136",
        "--out",
        str(out),
        "--rounds",
        "3",
        "--runs",
        "5",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    measured = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            measured = len(load_lut(out))
        except Exception:
            measured = 0
        if measured >= 40:
            break
    assert proc.poll() is None, "profiling finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = load_lut(out)  # never corrupt: loads after a kill -9 at any moment
    assert 0 < len(partial) < 96 * 3
    kept = {k: v["estimate"] for t in partial.tables.values() for k, v in t.items()}
    # besides the table only the killed run's lock is left (stale: its pid is gone), and no temp files
    leftovers = {p.name for p in tmp_path.iterdir() if p.name != out.name and not p.name.startswith(".")}
    assert leftovers <= {"killed.json.lock"}

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = load_lut(out)
    for r in (128, 132, 136):
        assert set(final.tables[r]) == {op.key for op in resolution_ops(r, 1.0)}
    for t in final.tables.values():  # what was measured before the kill was kept, not re-measured
        for k, v in t.items():
            if k in kept:
                assert v["estimate"] == kept[k]
    assert final.predict(largest_arch(136)) > 0
    assert not (tmp_path / "killed.json.lock").exists()  # the stale lock was recovered, then released


def test_a_baseline_off_the_in_run_reference_is_reported(ort_lut, tmp_path, capsys):
    """The reference's baseline is timed alone before profiling; when the batches ran it at another
    speed, the table's milliseconds are not wall-clock ones, and profile says by how much."""
    from ofa_deploy.latency.profiling import baseline_offset

    table = load_lut(ort_lut)
    in_run = [d.ms for d in table.metadata.drift if d.ms]
    assert in_run and table.metadata.reference is not None
    copy = tmp_path / "lut.json"
    document = json.loads(ort_lut.read_text())
    document["metadata"]["reference"]["baseline_ms"] = 2 * statistics.median(in_run)  # as if timed at half speed
    copy.write_text(json.dumps(document))
    assert baseline_offset(load_lut(copy)) == pytest.approx(0.5)
    capsys.readouterr()
    args = ["profile", "--backend", "onnxruntime", "--resolutions", "128,132", "--out", str(copy), "--resume", "--json"]
    assert main([*args, *FAST]) == 0  # nothing left to measure: the summary only
    captured = capsys.readouterr()
    assert json.loads(captured.out)["baseline_offset"] == pytest.approx(0.5)
    assert "this table's milliseconds are 2.00x this machine's wall-clock ones" in captured.err
