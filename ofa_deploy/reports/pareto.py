"""Files for a Pareto front: a CSV a script can read and a plot a person can look at."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa_deploy.files import atomic_text_file, atomic_write_figure
from ofa_deploy.search.evolution import ParetoResult
from ofa_deploy.space.analytics import arch_stats


@dataclass(frozen=True)
class Chosen:
    """A network picked from the search, marked on the plot at its predicted latency and score."""

    label: str
    latency_ms: float
    score: float


def write_pareto(
    front: ParetoResult,
    directory: Path,
    lut_name: str,
    budgets_ms: Sequence[float] = (),
    chosen: Sequence[Chosen] = (),
) -> None:
    """``pareto.csv`` (one row per front arch) and ``pareto.png``: the front over every evaluated
    arch, each latency budget as a dashed line, and each chosen network as a star."""
    directory.mkdir(parents=True, exist_ok=True)
    score_name = "accuracy" if front.objective.is_accuracy else "flops_m_proxy"
    with atomic_text_file(directory / "pareto.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["latency_ms", score_name, "flops_m", "r", "arch"])
        for arch, lat, score, values in zip(front.archs, front.latency, front.scores, front.values):
            flops = values.get("flops_m", arch_stats(arch).flops_m)
            writer.writerow(
                [
                    f"{lat:.4f}",
                    f"{score:.5f}",
                    f"{flops:.2f}",
                    arch.r,
                    json.dumps(arch.to_dict(), separators=(",", ":")),
                ]
            )
    fig = pareto_figure(front, lut_name, budgets_ms, chosen)
    atomic_write_figure(directory / "pareto.png", fig, dpi=110)


def pareto_figure(front: ParetoResult, lut_name: str, budgets_ms: Sequence[float] = (), chosen: Sequence[Chosen] = ()):
    """The plot of :func:`write_pareto`, as a matplotlib ``Figure``."""
    from matplotlib.figure import Figure  # object API: no global backend or pyplot state

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    cloud_lat, cloud_score = front.cloud
    if len(cloud_lat):
        keep = np.random.default_rng(0).permutation(len(cloud_lat))[:5000]
        ax.scatter(cloud_lat[keep], cloud_score[keep], s=3, alpha=0.15, color="tab:gray", label="evaluated")
    ax.step(front.latency, front.scores, where="post", color="tab:red", lw=1.5)
    ax.scatter(front.latency, front.scores, s=12, color="tab:red", label=f"Pareto front ({len(front.archs)})")
    for i, budget in enumerate(budgets_ms):
        label = "latency budget" + ("s" if len(budgets_ms) > 1 else "") if i == 0 else None
        ax.axvline(budget, color="tab:blue", ls="--", lw=1, label=label)
        ax.annotate(
            f"{budget:g} ms",
            (budget, 1),
            xycoords=("data", "axes fraction"),
            xytext=(-3, -12),
            ha="right",
            textcoords="offset points",
            fontsize=7,
            color="tab:blue",
        )
    for i, pick in enumerate(chosen):
        ax.scatter(
            [pick.latency_ms],
            [pick.score],
            marker="*",
            s=160,
            color="gold",
            edgecolor="black",
            zorder=5,
            label="chosen" if i == 0 else None,
        )
        ax.annotate(pick.label, (pick.latency_ms, pick.score), xytext=(6, -10), textcoords="offset points", fontsize=7)
    ax.set_xlabel(f"predicted latency on {lut_name} (ms)")
    ax.set_ylabel("predicted top-1 accuracy" if front.objective.is_accuracy else "MFLOPs (proxy)")
    ax.set_title(f"{front.objective.name}: {front.evaluated} archs in {front.seconds:.1f} s", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
