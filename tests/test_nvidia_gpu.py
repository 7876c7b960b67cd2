"""The nvidia backend on a real NVIDIA GPU: engines, CUDA-event timing, compile and benchmark.

Every test here is marked ``gpu`` and skipped with "needs an NVIDIA GPU" elsewhere (skips are not
passes); an engine whose package is missing is skipped naming it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.nvidia.backend import NvidiaBackend, engine_runtime
from ofa_deploy.backends.nvidia.gpu import list_gpus
from ofa_deploy.cli.main import main
from ofa_deploy.errors import OFADeployError, RuntimeMissingError
from ofa_deploy.latency.profiling import reference_key
from ofa_deploy.space.arch import sample_arch
from ofa_deploy.space.ops import resolution_ops


def _gpu_reason() -> str | None:
    try:
        list_gpus()
    except OFADeployError as exc:
        return f"needs an NVIDIA GPU ({exc})"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_gpu_reason() is not None, reason=_gpu_reason() or "")]
ENGINES = ["tensorrt", "ort-tensorrt", "ort-cuda", "torch"]
FAST = TimingOptions(threads=1, warmup=3, rounds=3, runs=5)


def backend_for(engine: str, **settings) -> NvidiaBackend:
    try:
        engine_runtime(engine)
    except RuntimeMissingError as exc:
        pytest.skip(str(exc))
    return NvidiaBackend(FAST, engine=engine, **settings)


def test_check_records_the_gpu_and_its_conditions():
    backend = backend_for("torch") if _has("torch") else backend_for("tensorrt")
    info = backend.check()
    details = info["details"]
    gpu = list_gpus()[0]
    assert details["gpu"] == gpu.name and details["compute_capability"] == gpu.compute_capability
    assert "conditions" in details and "time" in details["conditions"]


def _has(engine: str) -> bool:
    try:
        engine_runtime(engine)
    except RuntimeMissingError:
        return False
    return True


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_operators_are_timed_with_cuda_events(tmp_path, engine, precision):
    if engine == "ort-cuda" and precision == "fp16":
        pytest.skip("ort-cuda runs fp32 only (the settings refuse fp16)")
    backend = backend_for(engine, precision=precision, batch_size=8, engine_cache=str(tmp_path))
    ops = resolution_ops(160, 1.0)[29:32]
    reference = backend.reference(reference_key(1.0))
    assert reference.baseline_ms > 0
    results = backend.measure(ops, reference)
    for op in ops:
        stats = results[op.key]
        assert stats.count == FAST.rounds * FAST.runs
        assert 0 < stats.min <= stats.median and stats.reference_ms > 0
        assert stats.batch_size == 8
    if engine == "tensorrt":
        assert list(tmp_path.rglob("*.engine")) and list(tmp_path.glob("timing-*.cache"))


def test_larger_batches_take_longer_per_call_but_less_per_image(tmp_path):
    engine = next((e for e in ENGINES if _has(e)), None)
    if engine is None:
        pytest.skip("no GPU engine installed")
    op = [resolution_ops(224, 1.0)[10]]
    small = backend_for(engine, batch_size=1, engine_cache=str(tmp_path)).measure(op)[op[0].key]
    large = backend_for(engine, batch_size=64, engine_cache=str(tmp_path)).measure(op)[op[0].key]
    assert large.estimate > small.estimate
    assert large.estimate / 64 < small.estimate


@pytest.mark.parametrize("engine", ["tensorrt", "ort-cuda"])
def test_compile_and_benchmark_report_latency_and_throughput_per_batch_size(tmp_path, capsys, engine):
    backend_for(engine)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(sample_arch(np.random.default_rng(0), resolutions=[160]).to_dict()))
    bundle = tmp_path / "bundle"
    flags = ["--backend", "nvidia", "--engine", engine, "--batch-size", "16", "--rounds", "3", "--runs", "5"]
    assert main(["compile", "--arch", str(arch), "--out", str(bundle), *flags]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verification"]["passed"] is True
    assert manifest["backend"]["details"]["gpu"] == list_gpus()[0].name
    if engine == "tensorrt":
        assert manifest["artifact"]["kind"] == "tensorrt-engine"
        assert manifest["artifact"]["details"]["tensorrt_version"] == manifest["backend"]["runtime_version"]
    capsys.readouterr()
    assert main(["benchmark", str(bundle), *flags, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    text = json.dumps(result)
    assert "throughput_images_per_s" in text and "per_batch_size" in text and "gpu_conditions" in text
