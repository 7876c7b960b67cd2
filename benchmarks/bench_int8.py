"""What INT8 changes on the host backends: speed-up over float32, ranking, and the pick under a budget.

    python benchmarks/bench_int8.py                                   # onnxruntime and openvino, 40 networks
    python benchmarks/bench_int8.py --backends openvino --networks 100

Samples N sub-networks over five resolutions (160..224, random weights: latency does not depend on
values) and times each whole network on each backend at float32 and at int8 (onnxruntime, openvino:
the QDQ model of ``ofa_deploy.backend.quantization``; tflite: the full-integer ``.tflite``; both
calibrated on random inputs), the two models of each network in the same interleaved rounds (raw
wall-clock, no drift reference: each precision's reference operator would scale it differently).
Reports per backend:

* the int8 speed-up (float32 ms / int8 ms): median and range over the networks;
* Kendall tau between the float32 and the int8 latency rankings;
* for five budgets (the 10th..90th percentiles of the float32 latencies), the network a search would
  pick among the N (most FLOPs within the budget) from float32 and from int8 measurements: whether
  the picks differ, and the float32 pick's int8 latency against the budget (above 100%: the float32
  table's pick misses the deadline when shipped as int8; far below: it leaves speed unused).

Writes benchmarks/out/int8.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import kendalltau

from ofa_deploy.backend.profiles import default_profile_for
from ofa_deploy.backend.timing import TimingOptions, time_interleaved
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.space.analytics import arch_stats
from ofa_deploy.space.arch import sample_batch
from ofa_deploy.space.ops import arch_ops

RESOLUTIONS = (160, 176, 192, 208, 224)
INT8_BACKENDS = ("onnxruntime", "openvino", "tflite")
BUDGET_PERCENTILES = (10, 30, 50, 70, 90)


def measure(name: str, graphs, timing: TimingOptions, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Each network's float32 and int8 wall-clock latency (ms), both models of ``chunk`` networks loaded
    together and timed in the same interleaved rounds: no drift between the two, and raw times (a drift
    reference normalises each precision by its own reference operator's baseline, which would scale the
    two differently)."""
    profile = default_profile_for(name)
    backends = [profile.create_backend({"precision": p}, "bench_int8", **timing.to_dict()) for p in ("fp32", "int8")]
    fp32, int8 = [], []
    for start in range(0, len(graphs), chunk):
        models = [[backend.load(g)] for g in graphs[start : start + chunk] for backend in backends]
        stats = time_interleaved(models, timing)
        fp32 += [s.raw_estimate for s in stats[0::2]]
        int8 += [s.raw_estimate for s in stats[1::2]]
    return np.array(fp32), np.array(int8)


def pick(latency: np.ndarray, flops: np.ndarray, budget: float) -> int | None:
    fits = np.flatnonzero(latency <= budget)
    return None if fits.size == 0 else int(fits[np.argmax(flops[fits])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(INT8_BACKENDS), choices=INT8_BACKENDS)
    parser.add_argument("--networks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    archs = sample_batch(np.random.default_rng(args.seed), args.networks, RESOLUTIONS).to_archs()
    graphs = [build_graph(arch_ops(a)) for a in archs]
    flops = np.array([arch_stats(a, 1.0).flops_m for a in archs])
    timing = TimingOptions(threads=1, warmup=2, rounds=args.rounds, runs=args.runs)
    results, rows, budget_rows = {}, [], []
    for name in args.backends:
        started = time.perf_counter()
        fp32, int8 = measure(name, graphs, timing)
        speedup = fp32 / int8
        tau = float(kendalltau(fp32, int8).statistic)
        budgets = []
        for pct in BUDGET_PERCENTILES:
            budget = float(np.percentile(fp32, pct))
            by_fp32, by_int8 = pick(fp32, flops, budget), pick(int8, flops, budget)
            budgets.append(
                {
                    "percentile": pct,
                    "budget_ms": budget,
                    "fp32_pick": by_fp32,
                    "int8_pick": by_int8,
                    "picks_differ": by_fp32 != by_int8,
                    "fp32_pick_int8_ms": None if by_fp32 is None else float(int8[by_fp32]),
                    "int8_pick_flops_gain": None
                    if by_fp32 is None or by_int8 is None
                    else float(flops[by_int8] / flops[by_fp32] - 1),
                }
            )
        results[name] = {
            "fp32_ms": fp32.tolist(),
            "int8_ms": int8.tolist(),
            "speedup_median": float(np.median(speedup)),
            "speedup_min": float(speedup.min()),
            "speedup_max": float(speedup.max()),
            "kendall_tau": tau,
            "budgets": budgets,
            "seconds": time.perf_counter() - started,
        }
        rows.append(
            [
                name,
                args.networks,
                f"{np.median(speedup):.2f}x",
                f"{speedup.min():.2f}-{speedup.max():.2f}x",
                f"{tau:.3f}",
                f"{results[name]['seconds']:.0f} s",
            ]
        )
        for b in budgets:
            miss = "-" if b["fp32_pick_int8_ms"] is None else f"{b['fp32_pick_int8_ms'] / b['budget_ms']:.0%}"
            gain = "-" if b["int8_pick_flops_gain"] is None else f"{b['int8_pick_flops_gain']:+.0%}"
            budget_rows.append(
                [name, f"p{b['percentile']}", f"{b['budget_ms']:.2f}", "yes" if b["picks_differ"] else "no", miss, gain]
            )
    print(f"INT8 against float32 on {machine()} (1 thread, {len(RESOLUTIONS)} resolutions {RESOLUTIONS[0]}..224)")
    print_table(["backend", "networks", "int8 speed-up (median)", "range", "Kendall tau fp32 vs int8", "time"], rows)
    print()
    print_table(
        [
            "backend",
            "budget (fp32 percentile)",
            "budget ms",
            "int8 pick differs",
            "fp32 pick as int8 / budget",
            "int8 pick FLOPs vs fp32 pick",
        ],
        budget_rows,
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "int8.json").write_text(json.dumps({"machine": machine(), "networks": args.networks, **results}, indent=1))
    print(f"\nwrote {OUT / 'int8.json'}")


if __name__ == "__main__":
    main()
