"""Every host backend, run for real on a few operators and a small network."""

import re
import sys

import pytest

from ofa_deploy.backend.registry import backend_names, builtin_backends, create_backend
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError, RuntimeMissingError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import arch_ops, resolution_ops

FAST = TimingOptions(threads=1, warmup=1, rounds=2, runs=3)
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai_edge_litert.interpreter"}


@pytest.fixture(params=sorted(RUNTIME_MODULES))
def backend(request):
    """The host backends (the adb backend needs a device: tests/test_adb_device.py covers it)."""
    return create_backend(request.param, FAST)


def test_registry_lists_builtins():
    assert set(builtin_backends()) <= set(backend_names())
    assert set(RUNTIME_MODULES) | {"adb", "fpga", "nvidia", "tvm"} == set(builtin_backends())


RUNTIME_DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert"}


def test_check_reports_the_runtime_that_is_installed(backend):
    """What tables and bundles record as the runtime is the installed one, and the threads asked for."""
    from importlib import metadata

    info = backend.check()
    distribution = RUNTIME_DISTRIBUTIONS[backend.name]
    assert info["runtime"] == distribution
    assert info["runtime_version"].startswith(metadata.version(distribution))  # openvino adds its build
    assert info["threads"] == 1 and info["target"] == backend.description
    assert create_backend(backend.name, TimingOptions(threads=2)).check()["threads"] == 2


def test_measures_a_few_operators(backend):
    ops = resolution_ops(128, 1.0)
    chosen = [ops[0], ops[1], ops[30], ops[-3], ops[-1]]
    stats = backend.measure(chosen)
    assert list(stats) == [op.key for op in chosen]
    for s in stats.values():
        assert s.count == 6 and 0 < s.min <= s.median <= s.p99 and s.estimate > 0
    # a block with SE costs more than global pooling
    assert stats[ops[30].key].estimate > stats[ops[-3].key].estimate


def test_reference_normalisation(backend):
    reference = backend.reference(resolution_ops(160, 1.0)[30].key)
    assert reference.baseline_ms > 0
    [stats] = backend.measure_networks([build_graph(arch_ops(smallest_arch(128), 1.0))], reference)
    assert stats.reference_ms > 0 and stats.raw_estimate > 0
    # the normalised figure is the raw one rescaled by baseline / current reference speed
    ratio = stats.estimate / stats.raw_estimate
    assert 0.3 < ratio < 3.0


def test_missing_runtime_names_the_extra(monkeypatch, backend, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, RUNTIME_MODULES[backend.name], None)  # import now raises ImportError
    hint = f"pip install 'ofa-deploy[{backend.extra}]'" if backend.extra else "pip install onnxruntime"
    with pytest.raises(RuntimeMissingError, match=re.escape(hint)):
        backend.check()
    code = main(["profile", "--backend", backend.name, "--resolutions", "128", "--out", str(tmp_path / "x.json")])
    assert code == 3
    assert not (tmp_path / "x.json").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not installed" in err[0]


def test_unknown_backend_and_setting():
    with pytest.raises(BadInputError, match="unknown backend 'nope'"):
        create_backend("nope")
    with pytest.raises(BadInputError, match="unknown setting"):
        create_backend("onnxruntime", FAST, colour="red")
    with pytest.raises(BadInputError, match="positive integer"):
        TimingOptions(rounds=0)
