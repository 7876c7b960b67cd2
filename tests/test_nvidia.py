"""The nvidia backend without a GPU: what it says through the real CLI, and its engine-independent logic.

Runs on any machine. What needs a GPU (TensorRT engines, CUDA events) is in test_nvidia_gpu.py.
Where a driver matters, a tiny C library exporting the CUDA driver calls the backend makes is
compiled here and loaded in place of ``libcuda.so.1``: the closest real thing to a driver on a
machine without one (one stub reports no device, the other one GPU of compute capability 8.0).
"""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ofa_deploy.backend.profiles import load_profile
from ofa_deploy.backend.timing import Reference, TimingOptions
from ofa_deploy.backends.nvidia import conditions as nvidia_conditions
from ofa_deploy.backends.nvidia import gpu as nvidia_gpu
from ofa_deploy.backends.nvidia.backend import NvidiaBackend, dynamic_batch_onnx
from ofa_deploy.backends.nvidia.engine_cache import EngineCache, engine_key
from ofa_deploy.backends.nvidia.timing import GpuLatencyStats, parse_batch_sizes, time_gpu, with_batch
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError, TargetUnavailableError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.latency.metadata import TableMetadata
from ofa_deploy.space.arch import sample_arch
from ofa_deploy.space.ops import arch_ops, resolution_ops

GPU_PROFILES = {"v100": "fp32", "1080ti": "fp32", "t4": "fp16", "a100": "fp16", "h100": "fp16", "rtx4090": "fp16"}

STUB_DRIVER = r"""
#include <stddef.h>
#include <string.h>
int cuInit(unsigned int flags) { return INIT_STATUS; }
int cuDriverGetVersion(int *v) { *v = 12040; return 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuDeviceGet(int *d, int i) { *d = i; return 0; }
int cuDeviceGetName(char *name, int len, int d) { strncpy(name, "Stub GPU (test driver)", len); return 0; }
int cuDeviceGetAttribute(int *v, int attribute, int d) {
    *v = attribute == 75 ? 8 : attribute == 76 ? 0 : attribute == 16 ? 108 : 0; return 0; }
int cuDeviceTotalMem_v2(size_t *bytes, int d) { *bytes = (size_t)40 << 30; return 0; }
"""


def _driver_present() -> bool:
    try:
        ctypes.CDLL(nvidia_gpu.DRIVER_LIBRARY)
    except OSError:
        return False
    return True


no_driver = pytest.mark.skipif(_driver_present(), reason="this machine has an NVIDIA driver")


def _compiler() -> list[str] | None:
    if shutil.which("cc"):
        return ["cc"]
    try:
        import ziglang  # noqa: F401  (the dev extras bring it)
    except ImportError:
        return None
    return [sys.executable, "-m", "ziglang", "cc"]


@pytest.fixture(scope="module")
def stub_drivers(tmp_path_factory) -> dict[str, str]:
    """Two driver libraries: ``"no-device"`` (cuInit -> CUDA_ERROR_NO_DEVICE) and ``"one-gpu"``."""
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C compiler (cc or ziglang) to build the stub CUDA driver")
    directory = tmp_path_factory.mktemp("driver")
    source = directory / "stub.c"
    source.write_text(STUB_DRIVER)
    out = {}
    for name, status in (("no-device", 100), ("one-gpu", 0)):
        lib = directory / f"libcudastub-{name}.so"
        subprocess.run(
            [*compiler, "-shared", "-fPIC", f"-DINIT_STATUS={status}", "-o", str(lib), str(source)], check=True
        )
        out[name] = str(lib)
    return out


def cli(capsys, *args: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def one_error_line(err: list[str], verb: str) -> str:
    assert len(err) == 1, err
    assert err[0].startswith(f"ofa-deploy {verb}: error: backend 'nvidia'"), err[0]
    return err[0]


# ---------------------------------------------------------------------- through the CLI, without a GPU


@no_driver
def test_profile_without_driver_exits_3_with_one_line(capsys, tmp_path):
    out = tmp_path / "x.lut"
    code, stdout, err = cli(
        capsys, "profile", "--backend", "nvidia", "--device", "v100", "--resolutions", "224", "--out", out
    )
    assert code == 3
    assert "no NVIDIA driver" in one_error_line(err, "profile")
    assert stdout == "" and not out.exists()


@pytest.fixture(scope="module")
def gpu_lut(tmp_path_factory) -> Path:
    """A small table as a GPU machine would have written it (values from the FPGA model, r=128)."""
    out = tmp_path_factory.mktemp("lut") / "gpu.lut"
    code = main(["profile", "--device", "dpu-b4096", "--resolutions", "128", "--out", str(out), "--no-progress"])
    assert code == 0
    document = json.loads(out.read_text())
    settings = load_profile("v100").create_backend().settings.to_dict()
    document["metadata"].update(
        backend="nvidia", device="v100", measurement="timed", runtime="tensorrt", settings=settings
    )
    out.write_text(json.dumps(document))
    return out


@no_driver
@pytest.mark.parametrize(
    "verb",
    [
        ["validate", "--lut", "LUT", "--samples", "4", "--out", "OUT"],
        ["validate", "--backend", "nvidia", "--lut", "LUT", "--samples", "4", "--out", "OUT", "--engine", "torch"],
        ["compile", "--backend", "nvidia", "--arch", "ARCH", "--out", "OUT"],
        ["compile", "--device", "a100", "--arch", "ARCH", "--out", "OUT", "--lut", "LUT"],
    ],
)
def test_other_verbs_without_driver_exit_3(capsys, tmp_path, gpu_lut, verb):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(sample_arch(np.random.default_rng(0), resolutions=[128]).to_dict()))
    files = {"LUT": str(gpu_lut), "OUT": str(tmp_path / "out"), "ARCH": str(arch)}
    code, _, err = cli(capsys, *[files.get(a, a) for a in verb])
    assert code == 3, err
    assert "no NVIDIA driver" in one_error_line(err, verb[0])
    assert not (tmp_path / "out").exists()


@no_driver
def test_devices_lists_the_backend_unavailable_with_the_reason(capsys):
    code, stdout, _ = cli(capsys, "devices", "--json")
    assert code == 0
    document = json.loads(stdout)
    status = document["backends"]["nvidia"]
    assert status["available"] is False
    assert "no NVIDIA driver" in status["reason"]
    assert status["extra"] == "nvidia" and status["targets"] == []
    assert {"--engine", "--batch-size", "--gpu", "--cuda-graphs"} <= set(status["flags"])
    assert "fp16" in status["settings"]["precision"]  # --precision is every verb's flag; the setting says what runs
    gpu_profiles = {p["name"]: p for p in document["profiles"] if p["backend"] == "nvidia"}
    assert set(gpu_profiles) == set(GPU_PROFILES)
    assert not any(p["available"] for p in gpu_profiles.values())


def test_driver_without_device_is_named(capsys, tmp_path, stub_drivers, monkeypatch):
    monkeypatch.setattr(nvidia_gpu, "DRIVER_LIBRARY", stub_drivers["no-device"])
    code, _, err = cli(capsys, "profile", "--backend", "nvidia", "--resolutions", "224", "--out", tmp_path / "x.lut")
    assert code == 3
    assert "driver is installed but reports no CUDA device" in one_error_line(err, "profile")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--engine", "auto"],
            "found no GPU engine (TensorRT, onnxruntime-gpu or a CUDA build of torch): "
            "pip install 'ofa-deploy[nvidia]'",
        ),
        (
            ["--engine", "tensorrt"],
            "needs the 'tensorrt' package, which is not installed: pip install 'ofa-deploy[nvidia]'",
        ),
        (["--engine", "ort-cuda"], "has no CUDAExecutionProvider"),
    ],
)
def test_gpu_present_but_engine_missing_names_the_extra(capsys, tmp_path, stub_drivers, monkeypatch, flags, expected):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here: the missing-engine line cannot appear")
    from importlib import metadata

    if "+cpu" not in metadata.version("torch"):
        pytest.skip("torch here is a CUDA build: the missing-engine line cannot appear")
    monkeypatch.setattr(nvidia_gpu, "DRIVER_LIBRARY", stub_drivers["one-gpu"])
    out = tmp_path / "x.lut"
    code, _, err = cli(capsys, "profile", "--backend", "nvidia", "--resolutions", "224", "--out", out, *flags)
    assert code == 3
    assert expected in one_error_line(err, "profile")
    assert not out.exists()


def test_devices_shows_the_gpus_present_with_compute_capability(capsys, stub_drivers, monkeypatch):
    monkeypatch.setattr(nvidia_gpu, "DRIVER_LIBRARY", stub_drivers["one-gpu"])
    code, stdout, _ = cli(capsys, "devices", "--json")
    assert code == 0
    status = json.loads(stdout)["backends"]["nvidia"]
    assert status["targets"] == [
        {
            "id": "0",  # what --gpu takes
            "state": "ready",
            "ready": True,
            "device": "cuda:0",
            "name": "Stub GPU (test driver)",
            "compute_capability": "8.0",
            "memory_mib": 40 * 1024,
            "driver_cuda": "12.4",
        }
    ]
    code, stdout, _ = cli(capsys, "devices")
    assert code == 0
    assert "Targets of 'nvidia'" in stdout and "Stub GPU (test driver)" in stdout and "8.0" in stdout


def test_select_gpu_names_the_gpus_there_are(stub_drivers):
    gpu = nvidia_gpu.select_gpu(0, stub_drivers["one-gpu"])
    assert (gpu.name, gpu.compute_capability, gpu.multiprocessors) == ("Stub GPU (test driver)", "8.0", 108)
    assert gpu.cache_tag == "Stub GPU (test driver) sm_80"
    with pytest.raises(TargetUnavailableError, match="no CUDA device 3; this machine has 0: Stub GPU"):
        nvidia_gpu.select_gpu(3, stub_drivers["one-gpu"])


# ---------------------------------------------------------------------- profiles and settings


@pytest.mark.parametrize(("name", "precision"), sorted(GPU_PROFILES.items()))
def test_gpu_profiles_use_batch_64_and_their_precision(name, precision):
    profile = load_profile(name)
    assert profile.backend == "nvidia"
    backend = profile.create_backend()
    assert backend.settings.batch_size == 64
    assert backend.settings.precision == precision
    assert backend.settings.engine == "tensorrt"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"engine": "cudnn"}, "engine"),
        ({"precision": "int8"}, "precision"),
        ({"engine": "ort-cuda", "precision": "fp16"}, "precision"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "64"}, "batch_size"),
        ({"benchmark_batch_sizes": "1,x"}, "benchmark_batch_sizes"),
        ({"benchmark_batch_sizes": "1,0"}, "benchmark_batch_sizes"),
    ],
)
def test_bad_settings_are_one_bad_input_line(settings, field):
    with pytest.raises(BadInputError, match=f"setting {field}"):
        NvidiaBackend(**settings)


def test_batch_size_flag_wins_over_the_profile(capsys, tmp_path):
    code, _, err = cli(
        capsys, "profile", "--device", "v100", "--batch-size", "0", "--resolutions", "224", "--out", tmp_path / "x"
    )
    assert code == 2
    assert "batch_size" in err[-1] and "--batch-size" in err[-1]


def test_parse_batch_sizes():
    assert parse_batch_sizes("1, 16,64") == (1, 16, 64)
    with pytest.raises(ValueError, match="benchmark_batch_sizes"):
        parse_batch_sizes("8,5000")


# ---------------------------------------------------------------------- batching: graphs and ONNX


def _ort_run(model: bytes, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_with_batch_changes_only_the_batch_dimension():
    from ofa_deploy.graph.onnx_writer import to_onnx_bytes

    op = resolution_ops(160, 1.0)[30]
    graph = build_graph([op])
    batched = with_batch(graph, 4)
    assert batched.input_shape == (4, *graph.input_shape[1:]) and batched.output_shape[0] == 4
    assert batched.nodes is graph.nodes and graph.input_shape[0] == 1
    x = np.random.default_rng(1).standard_normal(batched.input_shape, dtype=np.float32)
    y = _ort_run(to_onnx_bytes(batched), x)
    assert y.shape == batched.output_shape
    single = _ort_run(to_onnx_bytes(graph), x[2:3])
    np.testing.assert_allclose(y[2:3], single, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        with_batch(graph, 0)


def test_dynamic_batch_onnx_serves_every_batch_size():
    arch = sample_arch(np.random.default_rng(3), resolutions=[128])
    graph = build_graph(arch_ops(arch, 1.0))
    model = dynamic_batch_onnx(graph)
    x = np.random.default_rng(0).standard_normal((3, 3, 128, 128), dtype=np.float32)
    batch3 = _ort_run(model, x)
    assert batch3.shape == (3, 1000)
    np.testing.assert_allclose(batch3[1:2], _ort_run(model, x[1:2]), rtol=1e-4, atol=1e-4)


def test_torch_engine_module_computes_what_the_onnx_computes():
    """The torch engine's module (run here on the CPU) against ONNX Runtime on a whole sub-network."""
    import torch

    from ofa_deploy.backends.nvidia.torch_engine import graph_module
    from ofa_deploy.graph.onnx_writer import to_onnx_bytes

    arch = sample_arch(np.random.default_rng(5), resolutions=[160])
    graph = with_batch(build_graph(arch_ops(arch, 1.0)), 2)
    x = np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)
    with torch.inference_mode():
        got = graph_module(graph)(torch.from_numpy(x)).numpy()
    expected = _ort_run(to_onnx_bytes(graph), x)
    assert got.shape == expected.shape == (2, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------- the timing protocol


class HostTimedRunner:
    """A real workload timed by the host clock: the CPU stand-in for a CUDA-event runner."""

    def __init__(self, size: int) -> None:
        self.a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
        self.calls = 0

    def timed(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter_ns()
            self()
            times.append((time.perf_counter_ns() - start) / 1e6)
        return times

    def __call__(self) -> None:
        self.calls += 1
        self.last = self.a @ self.a


def test_time_gpu_follows_the_round_protocol_with_the_reference():
    options = TimingOptions(threads=1, warmup=2, rounds=4, runs=3)
    model, other, ref = HostTimedRunner(96), HostTimedRunner(96), HostTimedRunner(48)
    stats = time_gpu([model, other], options, Reference("ref", ref, baseline_ms=1.0), batch_size=64)
    assert isinstance(stats, GpuLatencyStats)
    assert stats.count == 12 and stats.batch_size == 64
    assert model.calls == 2 + 2 * 3 and other.calls == 2 + 2 * 3  # warm-up, then alternating rounds
    assert ref.calls == 4 * 3
    assert stats.reference_ms is not None and stats.reference_ms > 0
    # normalised: model/reference ratio times the 1 ms baseline (a 96^3 matmul costs more than 48^3)
    assert stats.estimate > 1.0
    summary = stats.summary()
    assert summary["batch_size"] == 64
    assert summary["throughput_images_per_s"] == pytest.approx(64_000 / stats.estimate)
    assert summary["per_batch_size"][0]["per_image_ms"] == pytest.approx(stats.estimate / 64)


def test_time_gpu_without_reference_reports_raw_minima():
    runner = HostTimedRunner(32)
    stats = time_gpu(runner, TimingOptions(warmup=0, rounds=3, runs=2))
    assert stats.count == 6 and stats.reference_ms is None and stats.estimate == stats.raw_estimate
    assert "gpu_conditions" not in stats.summary()


# ---------------------------------------------------------------------- engine cache


def test_engine_key_depends_on_everything_an_engine_depends_on():
    base = engine_key(b"onnx", {"precision": "fp16"}, "10.3.0", "A100 sm_80")
    assert base == engine_key(b"onnx", {"precision": "fp16"}, "10.3.0", "A100 sm_80")
    assert base != engine_key(b"onnx2", {"precision": "fp16"}, "10.3.0", "A100 sm_80")
    assert base != engine_key(b"onnx", {"precision": "fp32"}, "10.3.0", "A100 sm_80")
    assert base != engine_key(b"onnx", {"precision": "fp16"}, "10.4.0", "A100 sm_80")
    assert base != engine_key(b"onnx", {"precision": "fp16"}, "10.3.0", "H100 sm_90")


def test_engine_cache_round_trip_and_shared_timing_cache(tmp_path):
    cache = EngineCache(tmp_path, "10.3.0", "NVIDIA A100-SXM4-40GB sm_80")
    key = cache.key(b"model", {"precision": "fp32", "workspace_mib": 4096, "batch_shapes": None})
    assert cache.load_engine(key) is None and cache.load_timing_cache() == b""
    cache.store_engine(key, b"serialized engine")
    cache.store_timing_cache(b"tactics")
    again = EngineCache(tmp_path, "10.3.0", "NVIDIA A100-SXM4-40GB sm_80")
    assert again.load_engine(key) == b"serialized engine"
    assert again.load_timing_cache() == b"tactics"
    assert EngineCache(tmp_path, "10.4.0", "NVIDIA A100-SXM4-40GB sm_80").load_timing_cache() == b""
    assert cache.timing_cache_path.name == "timing-10.3.0-nvidia-a100-sxm4-40gb-sm-80.cache"
    assert not list(tmp_path.rglob("*.tmp*"))


# ---------------------------------------------------------------------- conditions and metadata


def test_clock_drift_over_5_percent_is_warned(caplog):
    before = {"sm_clock_mhz": 1410, "memory_clock_mhz": 1215, "temperature_c": 40}
    steady = nvidia_conditions.compare(before, {**before, "sm_clock_mhz": 1395, "temperature_c": 55})
    assert steady["clock_change"] == pytest.approx(15 / 1410) and "warning" not in steady
    with caplog.at_level(logging.WARNING):
        throttled = nvidia_conditions.compare(before, {**before, "sm_clock_mhz": 1200, "temperature_c": 84})
    assert throttled["clock_change"] == pytest.approx(210 / 1410)
    assert "GPU clocks moved by 15%" in throttled["warning"] and "1410 -> 1200 MHz" in throttled["warning"]
    assert "GPU clocks moved by 15%" in caplog.text
    unknown = nvidia_conditions.compare({"available": False}, {"available": False})
    assert unknown["clock_change"] is None and "warning" not in unknown


def test_conditions_without_nvml_are_unknown_not_guessed():
    try:
        import pynvml  # noqa: F401
    except ImportError:
        snapshot = nvidia_conditions.read_conditions(0)
        assert snapshot["available"] is False and "nvidia-ml-py" in snapshot["reason"]
    else:
        pytest.skip("nvidia-ml-py is installed here")


def test_table_metadata_keeps_target_and_conditions():
    target = {"gpu": "NVIDIA A100", "compute_capability": "8.0", "batch_size": 64, "engine": "tensorrt"}
    conditions = {"before": {"sm_clock_mhz": 1410}, "after": {"sm_clock_mhz": 1410, "clock_change": 0.0}}
    metadata = TableMetadata.new(backend="nvidia", target=target, conditions=conditions)
    again = TableMetadata.from_dict(json.loads(json.dumps(metadata.to_dict())), "x.lut")
    assert again.target == target and again.conditions == conditions
    with pytest.raises(BadInputError, match="field 'conditions' has the wrong type"):
        TableMetadata.from_dict({**metadata.to_dict(), "conditions": [1]}, "x.lut")


# ---------------------------------------------------------------------- the backend's flow, engine stood in by the CPU


class OrtCpuRunner(HostTimedRunner):
    """ONNX Runtime on the CPU in place of a GPU engine: the same ONNX, timed by the host clock."""

    def __init__(self, onnx: bytes, input_shape: tuple[int, ...]) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self.x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.session.run(None, {"input": self.x})

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": x})[0]


class CpuStandIn(NvidiaBackend):
    """The nvidia backend with only its engine swapped for ONNX Runtime on the CPU (the stub driver
    provides the GPU): batching, the protocol, profiling metadata, compile and benchmark run as shipped."""

    def runtime_info(self):
        self.gpu  # noqa: B018 (the driver is asked, as on a GPU machine)
        self._engine = "ort-cuda"
        return {"runtime": "onnxruntime (CPU stand-in)", "runtime_version": "test", "engine": self._engine}

    def _runner(self, graph, onnx=None, batch_shapes=None):
        from ofa_deploy.graph.onnx_writer import to_onnx_bytes

        return OrtCpuRunner(onnx or to_onnx_bytes(graph), graph.input_shape)


def test_profile_records_batch_gpu_and_conditions(tmp_path, stub_drivers, monkeypatch):
    from ofa_deploy.latency.profiling import ProfilePlan, profile, profile_metadata
    from ofa_deploy.latency.table import LatencyTable

    monkeypatch.setattr(nvidia_gpu, "DRIVER_LIBRARY", stub_drivers["one-gpu"])
    options = TimingOptions(threads=1, warmup=1, rounds=3, runs=3)
    ops = resolution_ops(128, 1.0)
    chosen = {op.key: op for op in (ops[1], ops[10], ops[-1])}
    plan = ProfilePlan(1.0, (128,), chosen, {128: set(chosen)})
    tables = {}
    for batch in (1, 8):
        backend = CpuStandIn(options, batch_size=batch)
        out = tmp_path / f"b{batch}.lut"
        profile(backend, plan, out, profile_metadata(backend, "stub"), progress=False)
        tables[batch] = LatencyTable.load(out)
    metadata = tables[8].metadata
    assert metadata.settings["batch_size"] == 8
    assert metadata.target["gpu"] == "Stub GPU (test driver)" and metadata.target["compute_capability"] == "8.0"
    assert metadata.target["batch_size"] == 8 and metadata.target["engine"] == "ort-cuda"
    assert set(metadata.conditions) == {"before", "after"}
    assert metadata.conditions["after"]["clock_change"] is None  # no NVML here: unknown, not 0
    heavy = ops[10].key  # an inverted-residual block at 64x64: 8 images cost more than one
    assert tables[8].tables[128][heavy]["estimate"] > tables[1].tables[128][heavy]["estimate"]
    assert set(tables[8].tables[128]) == set(chosen)  # keys are the official per-image keys


def test_compile_and_benchmark_report_every_batch_size(tmp_path, stub_drivers, monkeypatch):
    monkeypatch.setattr(nvidia_gpu, "DRIVER_LIBRARY", stub_drivers["one-gpu"])
    backend = CpuStandIn(
        TimingOptions(threads=1, warmup=1, rounds=2, runs=2), batch_size=4, benchmark_batch_sizes="1,2"
    )
    backend.check()
    graph = build_graph(arch_ops(sample_arch(np.random.default_rng(1), resolutions=[128]), 1.0))
    artifact = backend.compile(graph, tmp_path)
    assert artifact.kind == "onnx" and artifact.input_shape == [4, 3, 128, 128]
    assert artifact.details["batch_size"] == 4 and artifact.details["dynamic_batch"] is True
    run = backend.load_artifact(tmp_path, artifact)
    x = np.random.default_rng(2).standard_normal((1, 3, 128, 128), dtype=np.float32)
    assert run(x).shape == (1, 1000)
    stats = backend.benchmark(tmp_path, artifact)
    summary = stats.summary()
    assert summary["batch_size"] == 4
    assert [row["batch_size"] for row in summary["per_batch_size"]] == [1, 2, 4]
    assert all(row["throughput_images_per_s"] > 0 for row in summary["per_batch_size"])
    figures = stats.per_batch()  # typed, as the CLI prints them; the JSON rows are these
    assert [f.to_dict() for f in figures] == summary["per_batch_size"]
    assert figures[-1].latency_ms == stats.estimate and figures[-1].per_image_ms == pytest.approx(stats.estimate / 4)
    assert set(summary["gpu_conditions"]) >= {"before", "after", "clock_change"}
    assert backend.verify_tolerance == 1e-3 and CpuStandIn(precision="fp16").verify_tolerance == 5e-2
