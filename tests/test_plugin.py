"""A third-party backend, installed for real, used end to end through the CLI.

``tests/plugin_package`` is a separate distribution (``ofa-deploy-roofline-plugin``) that registers
two entry points in the group ``ofa_deploy.backends``: ``roofline`` (an analytical backend with its
own flag, ``--peak-gflops``, and artifact kind, ``cost-report``) and ``onnxruntime`` (a clash with
the built-in, which must be refused). It is installed with pip into a temporary directory and the
CLI runs as subprocesses with that directory on ``PYTHONPATH``, so the entry points are found by
``importlib.metadata`` exactly as in a user's environment; nothing in the core knows about it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ofa_deploy.space.arch import largest_arch, smallest_arch

PLUGIN_SOURCE = Path(__file__).resolve().parent / "plugin_package"
DISTRIBUTION = "ofa-deploy-roofline-plugin"
PLUGIN_VERSION = "0.1.0"
MODEL = f"roofline model {PLUGIN_VERSION}"
R = 160
DEFAULT_PEAK_GFLOPS = 50.0  # RooflineSettings defaults
DEFAULT_INVOCATION_MS = 0.05


# ---------------------------------------------------------------------- installation and running


def _setuptools_usable() -> bool:
    """Can pip build the plugin without build isolation here (setuptools, and wheel for an old one)?"""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major, minor = (int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    # setuptools >= 70.1 builds wheels on its own; older ones need the 'wheel' package
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin installed by pip into a directory of its own (as ``pip install --target`` does)."""
    root = tmp_path_factory.mktemp("plugin")
    # pip builds in the source tree (build/, *.egg-info): build a copy, never the checkout
    source = root / "source"
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = dict(os.environ)
    if not _setuptools_usable():  # provide the build tools to the build step only
        tools = root / "build-tools"
        got = _pip("install", "--quiet", "--target", str(tools), "setuptools>=70.1")
        assert got.returncode == 0, f"could not provide setuptools to build the plugin:\n{got.stderr}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tools), env.get("PYTHONPATH", "")) if p)
    target = root / "site"
    installed = _pip(
        "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source), env=env
    )
    assert installed.returncode == 0, f"pip could not install the plugin package:\n{installed.stderr}"
    [dist_info] = target.glob("ofa_deploy_roofline_plugin-*.dist-info")
    assert "[ofa_deploy.backends]" in (dist_info / "entry_points.txt").read_text()
    return target


def cli(site: Path, command: str, *paths: Path | str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ofa_deploy COMMAND PATHS`` in a fresh process that sees the installed plugin
    (``command`` is split on spaces; ``paths`` are passed as they are)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    args = [*command.split(), *map(str, paths)]
    return subprocess.run(
        [sys.executable, "-m", "ofa_deploy", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return result


def is_clash_warning(line: str) -> bool:
    """The refusal of the plugin's backend named like a built-in one, or of its profile named so."""
    return DISTRIBUTION in line and "refused" in line and ("'onnxruntime'" in line or "'zcu102'" in line)


def other_stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without the (expected, every-run) refusal of the clashing plugin."""
    return [line for line in result.stderr.splitlines() if line.strip() and not is_clash_warning(line)]


def entries(lut: Path) -> dict[str, dict]:
    return json.loads(lut.read_text())["entries"][str(R)]


# ---------------------------------------------------------------------- shared outputs


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def archs(work) -> dict[str, Path]:
    from ofa_deploy.space.arch import save_arch_file

    paths = {"small": work / "small.json", "large": work / "large.json"}
    save_arch_file(paths["small"], smallest_arch(R))
    save_arch_file(paths["large"], largest_arch(R))
    return paths


@pytest.fixture(scope="module")
def lut(site, work) -> tuple[Path, dict]:
    out = work / "roofline.json"
    started = time.monotonic()
    result = ok(cli(site, f"profile --backend roofline --resolutions {R} --json --no-progress --out", out, cwd=work))
    assert time.monotonic() - started < 30, "an analytical profile should take seconds"
    return out, json.loads(result.stdout)


# ---------------------------------------------------------------------- discovery


def test_devices_lists_plugin_and_refuses_the_clash(site, work):
    result = ok(cli(site, "devices --json", cwd=work))
    backends = json.loads(result.stdout)["backends"]

    roofline = backends["roofline"]
    assert roofline["kind"] == "analytical model"
    assert roofline["available"] is True and roofline["reason"] == ""
    assert roofline["plugin"] == f"{DISTRIBUTION} {PLUGIN_VERSION}"
    assert roofline["flags"] == ["--peak-gflops"]
    assert roofline["artifact_kinds"] == ["cost-report"]
    assert (roofline["runtime"], roofline["runtime_version"]) == ("roofline model", PLUGIN_VERSION)
    assert set(roofline["settings"]) == {"peak_gflops", "bandwidth_gbs", "layer_overhead_us", "invocation_overhead_us"}

    # the built-in keeps its name: still ONNX Runtime, a timed local runtime, not a plugin
    ort = backends["onnxruntime"]
    assert ort["kind"] == "timed local runtime" and ort["plugin"] == ""
    assert ort["runtime"] == "onnxruntime" and ort["artifact_kinds"] == ["onnx"]

    # the plugin's device profiles: its own is listed as its; the one named like a built-in is refused
    profiles = {p["name"]: p for p in json.loads(result.stdout)["profiles"]}
    edge = profiles["edge-npu"]
    assert edge["backend"] == "roofline" and edge["plugin"] == f"{DISTRIBUTION} {PLUGIN_VERSION}"
    assert edge["settings"]["peak_gflops"] == 200.0 and edge["available"] is True
    assert profiles["zcu102"]["backend"] == "fpga" and profiles["zcu102"]["plugin"] is None  # still the built-in
    remote = backends["socketdevice"]  # the plugin's second backend: a remote device
    assert remote["kind"] == "remote device" and remote["flags"] == ["--socket-address"]
    assert profiles["loopback-socket"]["backend"] == "socketdevice"

    # exactly two lines about the plugin package: the refusals, each naming both packages
    about_plugin = [line for line in result.stderr.splitlines() if DISTRIBUTION in line]
    assert len(about_plugin) == 2 and all(is_clash_warning(line) for line in about_plugin), result.stderr
    for line in about_plugin:
        assert f"{DISTRIBUTION} {PLUGIN_VERSION}" in line
        assert re.search(r"\bofa-deploy(?![-\w])", line), line  # the toolkit itself, not just the plugin's name
    assert other_stderr_lines(result) == []


def test_a_plugin_device_profile_configures_its_backend(site, work, lut):
    """``--device edge-npu`` (shipped by the plugin): its backend and settings, recorded in the table."""
    out = work / "edge.json"
    ok(cli(site, f"profile --device edge-npu --resolutions {R} --no-progress --out", out, cwd=work))
    meta = json.loads(out.read_text())["metadata"]
    assert meta["device"] == "edge-npu" and meta["backend"] == "roofline"
    assert meta["settings"]["peak_gflops"] == 200.0 and meta["settings"]["bandwidth_gbs"] == 25.0
    default, edge = entries(lut[0]), entries(out)
    assert set(edge) == set(default) and all(edge[k]["estimate"] <= default[k]["estimate"] for k in edge)
    assert sum(edge[k]["estimate"] for k in edge) < 0.5 * sum(default[k]["estimate"] for k in edge)  # 4x faster


# ---------------------------------------------------------------------- profile and predict


def test_profile_records_estimates_without_reference(lut):
    path, summary = lut
    assert summary["backend"] == "roofline" and summary["keys"] > 50
    # the plugin states its per-call cost (measure_overhead): exactly the invocation overhead
    assert summary["call_overhead_ms"] == pytest.approx(DEFAULT_INVOCATION_MS, rel=1e-12)
    document = json.loads(path.read_text())
    meta = document["metadata"]
    assert meta["measurement"] == "estimated"
    assert meta["backend"] == "roofline" and meta["runtime"] == "roofline model"
    assert meta["runtime_version"] == PLUGIN_VERSION
    assert meta.get("reference") is None and meta.get("drift", []) == []
    assert meta["settings"]["peak_gflops"] == DEFAULT_PEAK_GFLOPS
    table = entries(path)
    assert len(table) == summary["keys"]
    for key, record in table.items():
        assert record["estimate"] > 0, key
        assert record["count"] == 0, key  # nothing was timed


def test_predict_orders_archs_and_adds_overhead_once(site, work, lut, archs):
    path, _ = lut
    predictions = {}
    for size, arch in archs.items():
        doc = json.loads(ok(cli(site, "predict --json --lut", path, "--arch", arch, cwd=work)).stdout)
        assert doc["latency_ms"] > 0
        assert doc["latency_ms"] == pytest.approx(sum(doc["breakdown"].values()) + DEFAULT_INVOCATION_MS, rel=1e-9)
        predictions[size] = doc["latency_ms"]
    assert predictions["large"] > 1.5 * predictions["small"]


# ---------------------------------------------------------------------- the backend's own flag


def test_peak_gflops_flag_changes_the_estimates(site, work, lut):
    base, _ = lut
    slow = work / "half-peak.json"
    ok(
        cli(
            site,
            f"profile --backend roofline --peak-gflops {DEFAULT_PEAK_GFLOPS / 2} --resolutions {R} --no-progress --out",
            slow,
            cwd=work,
        )
    )
    assert json.loads(slow.read_text())["metadata"]["settings"]["peak_gflops"] == DEFAULT_PEAK_GFLOPS / 2
    fast, halved = entries(base), entries(slow)
    assert set(fast) == set(halved)
    slower = [k for k in fast if halved[k]["estimate"] > fast[k]["estimate"] * (1 + 1e-9)]
    same = [k for k in fast if halved[k]["estimate"] == pytest.approx(fast[k]["estimate"], rel=1e-12)]
    # half the FLOP/s: compute-bound operators get slower, memory-bound ones do not move, none gets faster
    assert len(slower) + len(same) == len(fast)
    assert len(slower) > len(fast) // 2
    assert any(k.startswith("Logits") for k in same)  # 1280x1000 weights, 1 pixel: bandwidth-bound
    assert any(k.startswith("Conv-input") for k in slower)  # the first 3x3 conv at full resolution

    # validate (no flag) re-uses the settings the table was profiled with: still exact, not 2x off
    report = json.loads(
        ok(
            cli(site, "validate --samples 4 --json --no-progress --no-save --lut", slow, "--out", work / "v", cwd=work)
        ).stdout
    )
    assert report["before"]["mape"] < 1e-9


def test_backend_flag_is_refused_for_another_backend(site, work):
    out = work / "refused.json"
    result = cli(site, f"profile --backend onnxruntime --peak-gflops 10 --resolutions {R} --out", out, cwd=work)
    assert result.returncode == 2
    [line] = other_stderr_lines(result)
    assert "--peak-gflops" in line and "roofline" in line and "onnxruntime" in line
    assert not out.exists()

    result = cli(site, f"profile --backend roofline --peak-gflops 0 --resolutions {R} --out", out, cwd=work)
    assert result.returncode == 2
    [line] = other_stderr_lines(result)
    assert "peak_gflops" in line and "positive" in line  # the plugin's own validate()
    assert not out.exists()


# ---------------------------------------------------------------------- validate


def test_validate_agrees_exactly(site, work, lut, tmp_path):
    path, _ = lut
    copy = tmp_path / "roofline.json"  # validate stores its calibration in the table: keep the shared one as is
    shutil.copy(path, copy)
    out = tmp_path / "validation"
    result = ok(
        cli(site, "validate --backend roofline --samples 8 --json --no-progress --lut", copy, "--out", out, cwd=work)
    )
    report = json.loads(result.stdout)
    assert report["backend"] == "roofline" and report["samples"] == 8
    assert report["normalised_by_reference"] is False
    # an additive model predicted by the sum of its own operators: exact up to rounding, before and after
    for side in ("before", "after", "all_before"):
        assert report[side]["acc5"] == 1.0
        assert report[side]["mape"] < 1e-9
        assert report[side]["kendall_tau"] == pytest.approx(1.0)
    assert report["calibration"]["slope"] == pytest.approx(1.0, abs=1e-9)
    assert report["calibration"]["intercept"] == pytest.approx(0.0, abs=1e-9)
    assert json.loads(copy.read_text())["calibration"]["backend"] == "roofline"
    assert (out / "report.json").is_file() and (out / "measurements.csv").is_file()


# ---------------------------------------------------------------------- compile and benchmark


@pytest.fixture(scope="module")
def bundle(site, work, lut, archs) -> Path:
    out = work / "bundle"
    ok(cli(site, "compile --backend roofline --arch", archs["large"], "--lut", lut[0], "--out", out, cwd=work))
    return out


def test_compile_writes_a_cost_report(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    artifact = manifest["artifact"]
    assert artifact["kind"] == "cost-report" and artifact["main"] == "cost_report.json"
    assert manifest["backend"]["name"] == "roofline" and manifest["backend"]["kind"] == "analytical model"
    assert manifest["backend"]["runtime_version"] == PLUGIN_VERSION
    verification = manifest["verification"]
    assert verification["passed"] is None and "does not return outputs" in verification["skipped"]

    report = json.loads((bundle / "cost_report.json").read_text())
    assert report["model"] == MODEL and report["settings"]["peak_gflops"] == DEFAULT_PEAK_GFLOPS
    layers = report["layers"]
    assert len(layers) == artifact["details"]["layers"] > 50
    assert {layer["bound"] for layer in layers} == {"compute", "memory"}
    for layer in layers:
        assert layer["us"] == pytest.approx(max(layer["compute_us"], layer["memory_us"]) + 5.0, rel=1e-12)
    total = (sum(layer["us"] for layer in layers) + report["invocation_overhead_us"]) / 1e3
    assert report["total_ms"] == pytest.approx(total, rel=1e-12) and total > 0
    # the LUT's prediction of the same arch is the model's whole-network figure
    assert manifest["predicted_latency"]["ms"] == pytest.approx(report["total_ms"], rel=1e-9)


def test_benchmark_returns_the_reports_estimate(site, work, bundle):
    total = json.loads((bundle / "cost_report.json").read_text())["total_ms"]
    result = json.loads(ok(cli(site, "benchmark --json", bundle, cwd=work)).stdout)
    assert result["backend"] == "roofline"
    assert result["measured"] is False and result["latency_ms"] is None
    assert result["estimated_by"] == MODEL
    assert result["measured_ms"] == pytest.approx(total, rel=1e-6)
    assert result["normalised_by_reference"] is False
    assert result["error_percent"] == pytest.approx(0.0, abs=1e-6)
    measurements = json.loads((bundle / "manifest.json").read_text())["measurements"]
    assert measurements[-1]["measured_ms"] == result["measured_ms"]

    refused = cli(site, "benchmark --backend onnxruntime", bundle, cwd=work)
    assert refused.returncode == 2
    [line] = other_stderr_lines(refused)
    assert "cost-report" in line and "onnxruntime" in line


PLUGIN_PARTS = "roofline or edge-npu or socketdevice or loopback-socket"  # its backends and profiles


def test_the_plugin_passes_the_conformance_suite(site, work):
    """The same checks as every built-in backend (tests/test_backend_conformance.py), in a process
    that sees the installed plugin: its two backends (a model, a remote device) and their profiles."""
    suite = Path(__file__).resolve().parent / "test_backend_conformance.py"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite), "-k", PLUGIN_PARTS],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) == 10, result.stdout[-1000:]  # 2 backends x 4 checks, 2 profiles


# ---------------------------------------------------------------------- a remote device over a socket


@pytest.fixture(scope="module")
def socket_device():
    """The stand-in device (tests/socket_device_server.py) on a loopback port; its address."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "socket_device_server.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("listening "), line
        yield f"127.0.0.1:{int(line.split()[1])}"
    finally:
        server.kill()
        server.wait()


def test_a_remote_plugin_backend_profiles_and_benchmarks_over_its_socket(site, work, archs, socket_device):
    """The plugin's ``socketdevice`` backend and ``loopback-socket`` profile: a whole resolution
    timed on the device, a bundle compiled and benchmarked there, its address never recorded, and a
    device that is not there is one line, exit 3."""
    out = work / "socket.json"
    device = f"--device loopback-socket --socket-address {socket_device}"
    ok(cli(site, f"profile {device} --no-progress --out", out, cwd=work))
    table = json.loads(out.read_text())
    assert table["metadata"]["backend"] == "socketdevice" and table["metadata"]["device"] == "loopback-socket"
    assert "address" not in table["metadata"]["settings"]  # today's address is not part of the table
    assert len(table["entries"][str(R)]) > 50 and all(e["count"] == 9 for e in table["entries"][str(R)].values())
    bundle = work / "socket-bundle"
    ok(cli(site, f"compile {device} --lut", out, "--arch", archs["small"], "--out", bundle, cwd=work))
    measured = json.loads(ok(cli(site, f"benchmark {device} --json", bundle, cwd=work)).stdout)
    assert measured["backend"] == "socketdevice" and measured["measured_ms"] > 0 and measured["predicted_ms"] > 0
    gone = cli(site, "profile --device loopback-socket --socket-address 127.0.0.1:9 --out", work / "x.json", cwd=work)
    assert gone.returncode == 3 and "no socket device at 127.0.0.1:9" in other_stderr_lines(gone)[-1]
