"""The timing protocol: interleaved rounds, the pass-wide reference, and how local backends batch.

The clock is simulated (``time.perf_counter_ns`` is replaced by a counter the fake models advance),
so the tests check the protocol's arithmetic exactly, independent of this machine's load.
"""

from __future__ import annotations

import numpy as np
import pytest

from ofa_deploy.backend import timing
from ofa_deploy.backend.timing import Reference, TimingOptions, time_interleaved, time_runner


class FakeMachine:
    """A clock in ns; ``slowdown(t)`` is the machine's speed factor at simulated time ``t`` (ms)."""

    def __init__(self, slowdown=lambda t_ms: 1.0):
        self.now_ns = 0
        self.slowdown = slowdown
        self.calls: list[str] = []

    def clock(self) -> int:
        return self.now_ns

    def model(self, name: str, cost_ms: float, spikes: dict[int, float] | None = None):
        """A runner costing ``cost_ms`` x the machine's slowdown; ``spikes[i]``: extra factor on call i."""
        count = {"n": 0}

        def run() -> None:
            factor = (spikes or {}).get(count["n"], 1.0)
            count["n"] += 1
            self.calls.append(name)
            self.now_ns += int(cost_ms * self.slowdown(self.now_ns / 1e6) * factor * 1e6)

        return run


@pytest.fixture
def machine(monkeypatch):
    def install(slowdown=lambda t_ms: 1.0) -> FakeMachine:
        fake = FakeMachine(slowdown)
        monkeypatch.setattr(timing.time, "perf_counter_ns", fake.clock)
        return fake

    return install


def test_rounds_are_passes_over_all_models_each_followed_by_the_reference(machine):
    fake = machine()
    options = TimingOptions(warmup=1, rounds=2, runs=2)
    reference = Reference("ref", fake.model("ref", 0.1), baseline_ms=0.1)
    time_interleaved([[fake.model("a", 1.0)], [fake.model("b", 2.0)]], options, reference)
    warmup, timed = fake.calls[:2], fake.calls[2:]
    assert warmup == ["a", "b"]
    one_pass = ["a", "a", "ref", "ref", "b", "b", "ref", "ref"]
    assert timed == one_pass * 2


def test_instances_alternate_between_rounds(machine):
    fake = machine()
    first, second = fake.model("first", 1.0), fake.model("second", 1.0)
    time_interleaved([[first, second]], TimingOptions(warmup=0, rounds=4, runs=1))
    assert fake.calls == ["first", "second", "first", "second"]


def test_a_slow_regime_is_cancelled_when_models_and_reference_share_it(machine):
    # The machine runs 1.5x slower for the second half of the measurement: raw figures of the
    # models measured in that half would be off by 50%; normalised, every model comes out exact.
    fake = machine(lambda t_ms: 1.5 if t_ms > 60 else 1.0)
    options = TimingOptions(warmup=0, rounds=10, runs=3)
    reference = Reference("ref", fake.model("ref", 0.2), baseline_ms=0.2)
    costs = [1.0, 2.0, 3.0]
    stats = time_interleaved([[fake.model(f"m{c}", c)] for c in costs], options, reference)
    for cost, s in zip(costs, stats):
        assert s.estimate == pytest.approx(cost, rel=1e-3)
        assert s.round_spread == pytest.approx(0.5, rel=1e-3)  # the regime is visible, not hidden


def test_one_slow_reference_round_does_not_move_a_model(machine):
    # The reference alone is hit by a 3x spike in one pass: with one reference per round the model
    # timed just before it would be 3x too fast in that round; the pass median ignores it.
    fake = machine()
    options = TimingOptions(warmup=0, rounds=1, runs=1)
    reference = Reference("ref", fake.model("ref", 0.2, spikes={0: 3.0}), baseline_ms=0.2)
    stats = time_interleaved([[fake.model(f"m{i}", 1.0)] for i in range(3)], options, reference)
    assert [s.estimate for s in stats] == pytest.approx([1.0, 1.0, 1.0], rel=1e-3)


def test_a_single_model_is_the_sequential_protocol(machine):
    fake = machine(lambda t_ms: 2.0 if t_ms > 10 else 1.0)
    options = TimingOptions(warmup=2, rounds=6, runs=4)
    reference = Reference("ref", fake.model("ref", 0.5), baseline_ms=0.5)
    stats = time_runner(fake.model("m", 1.0), options, reference)
    assert stats.estimate == pytest.approx(1.0, rel=1e-3)
    assert stats.raw_estimate > 1.0  # part of it ran in the slow regime
    assert stats.count == 24


def test_without_a_reference_estimates_are_raw(machine):
    fake = machine()
    stats = time_interleaved([[fake.model("a", 1.5)]], TimingOptions(warmup=0, rounds=3, runs=2))
    assert stats[0].estimate == stats[0].raw_estimate == pytest.approx(1.5)
    assert stats[0].reference_ms is None


def test_every_model_needs_an_instance():
    with pytest.raises(ValueError, match="at least one instance"):
        time_interleaved([[]], TimingOptions())


def test_local_backends_load_at_most_a_batch_at_once(monkeypatch):
    """measure_networks times ``batch_size`` networks together and releases them before the next batch."""
    from ofa_deploy.backend.registry import backend_class
    from ofa_deploy.graph.ir import build_graph
    from ofa_deploy.space.arch import sample_batch
    from ofa_deploy.space.ops import arch_ops

    cls = backend_class("onnxruntime")
    groups: list[int] = []
    monkeypatch.setattr(
        "ofa_deploy.backend.interface.time_interleaved",
        lambda models, options, reference, hook: groups.append(len(models)) or [len(models)] * len(models),
    )
    monkeypatch.setattr(cls, "load", lambda self, graph: lambda: None)
    backend = cls(TimingOptions())
    backend.batch_size = 4
    archs = sample_batch(np.random.default_rng(0), 10, resolutions=[160]).to_archs()
    results = backend.measure_networks([build_graph(arch_ops(a, 1.0)) for a in archs])
    assert groups == [4, 4, 2]
    assert len(results) == 10


def test_every_round_is_reported_for_progress_bars(machine):
    fake = machine()
    seen: list[tuple[int, int]] = []
    time_interleaved(
        [[fake.model("a", 1.0)]], TimingOptions(warmup=0, rounds=3, runs=1), on_round=lambda *a: seen.append(a)
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


class CountingBar:
    def __init__(self, n: int = 0):
        self.n = n

    def update(self, k: int) -> None:
        assert k > 0
        self.n += k


def test_a_bar_follows_the_rounds_of_one_measure_call_and_ends_at_its_size():
    from ofa_deploy.backend.progress import measuring

    class Backend:
        on_progress = None

    backend, bar = Backend(), CountingBar(n=7)
    with measuring(backend, bar, 40):
        backend.on_progress(5, 10)
        assert bar.n == 7 + 20
        backend.on_progress(6, 10)
        assert bar.n == 7 + 24
    assert bar.n == 47
    assert backend.on_progress is None  # nobody is left watching
