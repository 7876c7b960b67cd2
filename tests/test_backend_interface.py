"""The parts of the backend interface every backend relies on: typed settings, batching of remote
measurements, and backend-declared flags that cannot break the CLI."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from ofa_deploy.backend.interface import CliOption, LocalRuntimeBackend, RemoteDeviceBackend
from ofa_deploy.backend.settings import BackendSettings, parse_settings, setting
from ofa_deploy.backend.timing import LatencyStats
from ofa_deploy.cli import common
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import arch_ops, resolution_ops


@dataclass(frozen=True)
class Knobs(BackendSettings):
    rate: float = setting(1.0, "a rate")
    count: int = setting(2, "a count")
    name: str | None = setting(None, "a name")
    on: bool = setting(True, "a switch")

    def validate(self) -> None:
        if self.count < 1:
            raise ValueError("count: must be positive")


def test_settings_are_typed_and_checked():
    s = parse_settings(Knobs, {"rate": 3, "count": 4, "name": 7}, "profile.yaml")
    assert s == Knobs(rate=3.0, count=4, name="7", on=True) and isinstance(s.rate, float)
    for bad, words in [
        ({"count": "many"}, "count: expected int"),
        ({"count": True}, "count: expected int"),
        ({"on": "yes"}, "on: expected bool"),
        ({"count": 0}, "count: must be positive"),
        ({"colour": "red"}, "unknown setting"),
    ]:
        with pytest.raises(BadInputError, match=words) as info:
            parse_settings(Knobs, bad, "profile.yaml")
        assert str(info.value).startswith("profile.yaml")
    assert Knobs.describe()["rate"] == "a rate"


class CountingRemote(RemoteDeviceBackend):
    """Records the round trips the base class makes (the device itself is the adb tests' business)."""

    name = "counting-remote"
    description = "test double for the batching logic"
    batch_size = 2

    def __init__(self, **kw):
        super().__init__(**kw)
        self.trips: list[list[str]] = []
        self.closed = 0

    def runtime_info(self):
        return {"runtime": "none", "runtime_version": "0"}

    def open(self):
        pass

    def close(self):
        self.closed += 1

    def encode(self, graph):
        return repr(graph.input_shape).encode()

    def reference(self, key, baseline_ms=None):
        return None

    def measure_models(self, models, reference, names=None):
        self.trips.append([label for label, _ in models])
        return [LatencyStats.from_rounds([[float(len(data))]]) for _, data in models]


def test_remote_backends_measure_in_batches_and_close_in_with():
    graphs = [build_graph(arch_ops(smallest_arch(r), 1.0)) for r in (128, 132, 136, 140, 144)]
    with CountingRemote() as backend:
        results = backend.measure_networks(graphs)
        ops = resolution_ops(128, 1.0)[:3]
        by_key = backend.measure(ops)
    assert [len(t) for t in backend.trips] == [2, 2, 1, 2, 1]  # 5 networks, then 3 operators, 2 per trip
    assert len(results) == 5 and list(by_key) == [op.key for op in ops]
    assert backend.closed == 1


class FlagClash(LocalRuntimeBackend):
    name = "flag-clash"
    description = "declares a flag the CLI already has"
    cli_options = (CliOption("--out", "out", "clashes with the verbs' --out"),)

    def runtime_info(self):
        return {"runtime": "none", "runtime_version": "0"}

    def load(self, graph):
        return lambda: None


def test_a_clashing_backend_flag_is_ignored_not_fatal(monkeypatch, caplog):
    monkeypatch.setattr(common, "loadable_backends", lambda: {"flag-clash": FlagClash})
    monkeypatch.setattr(common, "_REFUSED_FLAGS", set())
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    with caplog.at_level("WARNING", logger="ofa_deploy"):
        common.add_target_args(parser)
        common.add_target_args(argparse.ArgumentParser(conflict_handler="error", parents=[]))
    assert parser.parse_args(["--out", "x"]).out == "x"
    refused = [r for r in caplog.records if "flag --out ignored" in r.getMessage()]
    assert len(refused) == 1 and "flag-clash" in refused[0].getMessage()


def test_a_model_needs_no_benchmark_and_refuses_one_with_exit_2(tmp_path):
    """``benchmark`` is optional for an analytical backend: one that implements only ``estimate`` is
    complete, and asked to benchmark it says what to use instead (exit 2)."""
    from ofa_deploy.backend.artifact import Artifact
    from ofa_deploy.backend.interface import AnalyticalBackend

    class Constant(AnalyticalBackend):
        name, description = "constant", "every graph takes 1 ms"

        def runtime_info(self) -> dict[str, str]:
            return {"runtime": "constant", "runtime_version": "1"}

        def estimate(self, graph) -> float:
            return 1.0

    model = Constant()
    assert model.measure_networks([build_graph(arch_ops(smallest_arch(128), 1.0))])[0].estimate == 1.0
    artifact = Artifact("onnx", ["model.onnx"], "input", [1, 3, 128, 128], "NCHW", "output", [1, 1000])
    with pytest.raises(BadInputError, match="no artifact to benchmark") as refused:
        model.benchmark(tmp_path, artifact)
    assert refused.value.exit_code == 2 and "ofa-deploy estimate --model" in str(refused.value)
