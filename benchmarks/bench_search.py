"""Search speed and quality: ours against the official OFA EvolutionFinder on identical inputs.

    pip install --no-deps ofa==0.1.0.post202307202001   # the official code, compared side by side
    python benchmarks/bench_search.py [--seeds 5] [--budgets 15,20,25,30,35,40] [--quick]

(a) Note10 tables, official accuracy predictor, 25 ms, population 100, 500 generations, both
    finders in this process, averaged over seeds: predicted accuracy and wall time.
(b) predicted accuracy at budgets 15..40 ms: ours, the official finder, and random search with the
    same number of evaluated archs as ours.
(c) our search time as population and generations grow; the NSGA-II Pareto front for 10..60 ms.
Targets (issue 4): accuracy >= official (mean over 5 seeds), >= 20x faster; full front < 2 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, print_table
from official_ofa import official_finder

from ofa_deploy.latency.table import load_lut
from ofa_deploy.search.evolution import (
    Objective,
    SearchConfig,
    common_resolutions,
    evolutionary_search,
    latency_constraint,
    pareto_search,
)
from ofa_deploy.search.predictors import load_accuracy_predictor
from ofa_deploy.space.arch import RESOLUTIONS, sample_batch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ofa_reference"


def run_official(budget: float, seed: int, population: int, generations: int) -> tuple[float, float, float]:
    random.seed(seed)
    np.random.seed(seed)
    finder = official_finder(
        REFERENCE / "note10",
        REFERENCE / "acc_predictor.pth",
        budget,
        population_size=population,
        max_time_budget=generations,
    )
    start = time.perf_counter()
    _, best = finder.run_evolution_search()
    seconds = time.perf_counter() - start
    accuracy, _, latency = best
    return accuracy, latency, seconds


def run_ours(table, objective, res, budget, seed, population, generations):
    config = SearchConfig(population, generations, seed=seed)
    result = evolutionary_search(objective, [latency_constraint(table, budget)], res, config)
    return result.score, result.values[f"latency[{table.name}]"], result.seconds, result.evaluated


def random_search(table, predictor, res, budget, n, seed) -> float:
    batch = sample_batch(np.random.default_rng(seed), n, res)
    ok = table.predict_batch(batch) <= budget
    return float(predictor.predict_batch(batch[np.nonzero(ok)[0]]).max()) if ok.any() else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="15,20,25,30,35,40")
    parser.add_argument("--quick", action="store_true", help="50 generations for the official finder in (b)")
    args = parser.parse_args()
    table = load_lut(REFERENCE / "note10")
    predictor = load_accuracy_predictor(REFERENCE / "acc_predictor.pth")
    objective = Objective.accuracy(predictor)
    res = common_resolutions([table], RESOLUTIONS)

    # (a) side by side at 25 ms
    rows, ours_acc, off_acc, ours_t, off_t = [], [], [], [], []
    for seed in range(args.seeds):
        a, lat, t, _ = run_ours(table, objective, res, 25.0, seed, 100, 500)
        oa, olat, ot = run_official(25.0, seed, 100, 500)
        ours_acc.append(a), off_acc.append(oa), ours_t.append(t), off_t.append(ot)
        rows.append([seed, f"{a:.4f}", f"{lat:.2f}", f"{t:.2f}", f"{oa:.4f}", f"{olat:.2f}", f"{ot:.1f}"])
        print(f"seed {seed}: ours {a:.4f} in {t:.2f}s, official {oa:.4f} in {ot:.1f}s", file=sys.stderr)
    rows.append(
        [
            "mean",
            f"{np.mean(ours_acc):.4f}",
            "",
            f"{np.mean(ours_t):.2f}",
            f"{np.mean(off_acc):.4f}",
            "",
            f"{np.mean(off_t):.1f}",
        ]
    )
    print(f"\n(a) Note10 <= 25 ms, population 100, 500 generations ({machine()})")
    print_table(["seed", "ours acc", "ours ms", "ours s", "official acc", "official ms", "official s"], rows)
    print(
        f"speed-up: {np.mean(off_t) / np.mean(ours_t):.1f}x; accuracy difference (ours - official): "
        f"{np.mean(ours_acc) - np.mean(off_acc):+.4f}"
    )

    # (b) across budgets
    rows = []
    gens_official = 50 if args.quick else 500
    for budget in [float(b) for b in args.budgets.split(",")]:
        a, _, _, evaluated = run_ours(table, objective, res, budget, 0, 100, 500)
        oa, _, _ = run_official(budget, 0, 100, gens_official)
        ra = random_search(table, predictor, res, budget, evaluated, 0)
        rows.append([f"{budget:g}", f"{a:.4f}", f"{oa:.4f}", f"{ra:.4f}", evaluated])
        print(f"budget {budget}: ours {a:.4f} official {oa:.4f} random {ra:.4f}", file=sys.stderr)
    print(
        f"\n(b) predicted top-1 by latency budget (seed 0; official finder {gens_official} generations; "
        "random search draws as many archs as ours evaluated)"
    )
    print_table(["budget ms", "ours", "official", "random", "archs evaluated"], rows)

    # (c) scaling and the Pareto front
    rows = []
    for population in (50, 100, 200, 400):
        for generations in (100, 500, 1000):
            _, _, t, evaluated = run_ours(table, objective, res, 25.0, 0, population, generations)
            rows.append([population, generations, evaluated, f"{t:.2f}", f"{evaluated / t / 1000:.0f}k"])
    print("\n(c) our search time vs population and generations (Note10 <= 25 ms)")
    print_table(["population", "generations", "archs evaluated", "seconds", "archs/s"], rows)
    front = pareto_search(objective, latency_constraint(table, 60.0), [], res)
    inside = front.latency >= 10.0
    print(
        f"\nPareto front 10..60 ms: {len(front.archs)} archs ({int(inside.sum())} at >= 10 ms) from "
        f"{front.latency.min():.1f} to {front.latency.max():.1f} ms, accuracy {front.scores.min():.4f}.."
        f"{front.scores.max():.4f}, in {front.seconds:.2f} s ({front.evaluated} archs evaluated)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
