"""The searches (ofa_deploy/search/evolution.py):
the official evolutionary search and NSGA-II under latency and other constraints."""

import dataclasses
import json

import numpy as np
import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.latency.table import load_lut
from ofa_deploy.search.evolution import (
    Constraint,
    InfeasibleConstraintError,
    Objective,
    SearchConfig,
    common_resolutions,
    evolutionary_search,
    latency_constraint,
    metric_constraint,
    non_dominated_ranks,
    pareto_front_2d,
    pareto_search,
)
from ofa_deploy.search.predictors import load_accuracy_predictor
from ofa_deploy.space.analytics import arch_stats
from ofa_deploy.space.arch import RESOLUTIONS, ArchBatch, sample_batch, smallest_arch


@pytest.fixture(scope="module")
def note10(reference_dir):
    return load_lut(reference_dir / "note10")


@pytest.fixture(scope="module")
def predictor(reference_dir):
    return load_accuracy_predictor(reference_dir / "acc_predictor.pth")


def test_resolutions_restricted_to_lut(note10):
    assert common_resolutions([note10], RESOLUTIONS) == (160, 176, 192, 208, 224)


def test_seeded_search_meets_constraint_and_is_reproducible(note10, predictor):
    res = common_resolutions([note10], RESOLUTIONS)
    objective = Objective.accuracy(predictor)
    runs = [
        evolutionary_search(objective, [latency_constraint(note10, 25.0)], res, SearchConfig(50, 60, seed=7))
        for _ in range(2)
    ]
    assert runs[0].arch == runs[1].arch and runs[0].score == runs[1].score
    assert runs[0].values["latency[note10]"] <= 25.0
    assert note10.predict(runs[0].arch) <= 25.0
    assert runs[0].arch.r in res
    assert runs[0].score == pytest.approx(predictor.predict(runs[0].arch), abs=1e-6)
    # better than the best of as many random feasible archs
    rand = sample_batch(np.random.default_rng(0), 3000, res)
    feasible = rand[np.nonzero(note10.predict_batch(rand) <= 25.0)[0]]
    assert runs[0].score >= predictor.predict_batch(feasible).max()


def test_multi_device_constraints_all_hold(note10, predictor, reference_dir):
    second = load_lut(reference_dir / "note10" / "192_lookup_table.yaml")  # one resolution only
    res = common_resolutions([note10, second], RESOLUTIONS)
    assert res == (192,)
    constraints = [
        latency_constraint(note10, 30.0, "a"),
        latency_constraint(second, 28.0, "b"),
        metric_constraint("flops_m", 300.0, 1.2, res),
        metric_constraint("memory_mb", 3.5, 1.2, res),
    ]
    result = evolutionary_search(Objective.accuracy(predictor), constraints, res, SearchConfig(40, 40))
    assert result.arch.r == 192
    assert note10.predict(result.arch) <= 30.0 and second.predict(result.arch) <= 28.0
    stats = arch_stats(result.arch, 1.2)
    assert stats.flops_m <= 300.0 and stats.peak_memory_bytes / 2**20 <= 3.5


def test_infeasible_constraint_is_reported_fast(note10, predictor):
    res = common_resolutions([note10], RESOLUTIONS)
    with pytest.raises(InfeasibleConstraintError) as info:
        evolutionary_search(Objective.accuracy(predictor), [latency_constraint(note10, 5.0)], res)
    assert "smallest reachable is 9.890 ms" in str(info.value)
    with pytest.raises(InfeasibleConstraintError, match="MFLOPs"):
        evolutionary_search(Objective.accuracy(predictor), [metric_constraint("flops_m", 10, 1.2, res)], res)


def test_barely_feasible_constraint_terminates(note10, predictor):
    res = common_resolutions([note10], RESOLUTIONS)
    minimum, _ = latency_constraint(note10, 1.0).minimum(res)
    result = evolutionary_search(
        Objective.accuracy(predictor), [latency_constraint(note10, minimum * 1.001)], res, SearchConfig(30, 20)
    )
    assert note10.predict(result.arch) <= minimum * 1.001


def test_jointly_infeasible_constraints(predictor):
    """Each constraint alone is reachable, together they are not: exit 2, not a hang."""
    res = (160, 224)
    small = Constraint("r", "px", 160, lambda b: b.r.astype(float), lambda rs: (160.0, smallest_arch(160)))
    large = Constraint("-r", "px", -224, lambda b: -b.r.astype(float), lambda rs: (-224.0, smallest_arch(224)))
    with pytest.raises(InfeasibleConstraintError, match="together"):
        evolutionary_search(Objective.accuracy(predictor), [small, large], res, SearchConfig(20, 5))


def test_flops_proxy_without_predictor(note10):
    res = common_resolutions([note10], RESOLUTIONS)
    result = evolutionary_search(
        Objective.flops_proxy(1.2, res), [latency_constraint(note10, 20.0)], res, SearchConfig(40, 40)
    )
    assert not result.objective.is_accuracy
    assert result.score == pytest.approx(arch_stats(result.arch, 1.2).flops_m)


def test_pareto_front_is_non_dominated_and_covers_budgets(note10, predictor):
    res = common_resolutions([note10], RESOLUTIONS)
    front = pareto_search(
        Objective.accuracy(predictor), latency_constraint(note10, 60.0), [], res, SearchConfig(100, 40)
    )
    assert np.all(np.diff(front.latency) > 0) and np.all(np.diff(front.scores) > 0)
    assert front.latency[0] < 11.0 and front.latency[-1] > 35.0
    lat = note10.predict_batch(ArchBatch.from_archs(front.archs))
    assert np.allclose(lat, front.latency)

    # the plot marks the budget (a dashed vertical line) and the chosen network (a star at its point)
    from ofa_deploy.reports.pareto import Chosen, pareto_figure

    best = int(np.argmax(front.scores))
    pick = Chosen("best.json", float(front.latency[best]), float(front.scores[best]))
    ax = pareto_figure(front, note10.name, [60.0], [pick]).axes[0]
    budget_lines = [line for line in ax.lines if list(line.get_xdata()) == [60.0, 60.0]]
    assert len(budget_lines) == 1 and budget_lines[0].get_linestyle() == "--"
    stars = [c for c in ax.collections if c.get_label() == "chosen"]
    assert len(stars) == 1 and np.allclose(stars[0].get_offsets(), [[pick.latency_ms, pick.score]])
    assert {"latency budget", "chosen"} <= {t.get_text() for t in ax.get_legend().get_texts()}


def brute_force_ranks(objs: np.ndarray) -> np.ndarray:
    le = (objs[:, None, :] <= objs[None, :, :]).all(axis=2)
    lt = (objs[:, None, :] < objs[None, :, :]).any(axis=2)
    dominates = le & lt
    ranks = np.full(len(objs), -1)
    rank = 0
    while (ranks < 0).any():
        alive = ranks < 0
        current = alive & ~dominates[alive].any(axis=0)  # alive and dominated by no alive point
        ranks[current] = rank
        rank += 1
    return ranks


def test_non_dominated_helpers():
    objs = np.array([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0], [5.0, 5.0]])
    assert non_dominated_ranks(objs).tolist() == [0, 0, 1, 0, 2]
    rng = np.random.default_rng(0)
    for _ in range(20):  # with many ties, against the pairwise definition
        tied = rng.integers(0, 6, (80, 2)).astype(float)
        assert np.array_equal(non_dominated_ranks(tied), brute_force_ranks(tied))
    front = pareto_front_2d(objs[:, 1], -objs[:, 0])
    assert sorted(front.tolist()) == [0, 1, 3]


def test_search_cli_json(reference_dir, tmp_path, capsys):
    out = tmp_path / "best.json"
    code = main(
        [
            "search",
            "--lut",
            str(reference_dir / "note10"),
            "--latency-ms",
            "25",
            "--accuracy-predictor",
            str(reference_dir / "acc_predictor.pth"),
            "--population",
            "40",
            "--generations",
            "30",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"arch", "accuracy", "latency_ms", "precision", "flops_m", "seconds"}
    assert 0 < doc["accuracy"] < 1 and doc["latency_ms"]["note10"] <= 25
    assert doc["precision"] == {"note10": "fp32"}  # the official tables record none: float32 TFLite
    written = json.loads(out.read_text())
    assert written["accuracy"] == doc["accuracy"] and written["latency_ms"] == doc["latency_ms"]
    assert written["width_mult"] == 1.2


def test_search_cli_pareto_and_errors(reference_dir, tmp_path, capsys):
    out = tmp_path / "p" / "best.json"
    code = main(
        [
            "search",
            "--lut",
            str(reference_dir / "note10"),
            "--latency-ms",
            "60",
            "--pareto",
            "--population",
            "60",
            "--generations",
            "20",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "note: --pareto searches with population 100 and 20 generations" in capsys.readouterr().err  # said
    assert (out.parent / "pareto.png").stat().st_size > 10_000
    rows = (out.parent / "pareto.csv").read_text().splitlines()
    assert rows[0].startswith("latency_ms,flops_m_proxy") and len(rows) > 5
    assert main(["search", "--lut", str(reference_dir / "note10"), "--latency-ms", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "smallest reachable" in err[0]
    assert (
        main(
            [
                "search",
                "--lut",
                str(reference_dir / "note10"),
                "--latency-ms",
                "20",
                "--latency-ms",
                "30",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_an_accuracy_predictor_of_another_width_is_refused(reference_dir, predictor, tmp_path, capsys):
    """The official predictor is for w1.2 sub-networks: searching w1.0 tables with it (search, demo) is
    exit 2 with one line naming both widths, before any work; a toolkit predictor keeps its width."""
    assert predictor.width_mult == 1.2
    lut = tmp_path / "w1.0.json"
    assert main(["profile", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(lut), "--no-progress"]) == 0
    capsys.readouterr()

    def search(predictor_path, out: str) -> int:
        quick = ["--generations", "5", "--population", "20", "--no-progress"]
        args = ["--lut", str(lut), "--latency-ms", "20", "--accuracy-predictor", str(predictor_path), *quick]
        return main(["search", *args, "--out", str(tmp_path / out)])

    official = reference_dir / "acc_predictor.pth"
    code = search(official, "a.json")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "w1.2 sub-networks" in err[0] and "tables are w1" in err[0], err
    assert not (tmp_path / "a.json").exists()
    demo = ["demo", "--device", "dpu-b4096", "--resolutions", "160", "--accuracy-predictor", str(official)]
    assert main([*demo, "--out", str(tmp_path / "demo")]) == 2
    assert "w1.2 sub-networks" in capsys.readouterr().err
    assert not list((tmp_path / "demo").glob("*.lut.json"))  # refused before profiling
    trained_on_w10 = dataclasses.replace(predictor, meta={**predictor.meta, "width_mult": 1.0})  # its file says so
    trained_on_w10.save(tmp_path / "w1.0.npz")
    assert load_accuracy_predictor(tmp_path / "w1.0.npz").width_mult == 1.0
    assert search(tmp_path / "w1.0.npz", "b.json") == 0
