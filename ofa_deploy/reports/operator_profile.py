"""Where a model's time goes, per operator: the files ``benchmark --model FILE --op-profile DIR`` writes.

``operators.json`` holds every operator (name, type, mean ms per inference, share of the operators'
total, calls per inference); ``operators.png`` is a bar chart of the slowest ones, so the handful of
layers that dominate is seen at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ofa_deploy.backend.tool_output import OperatorTiming
from ofa_deploy.files import atomic_write_figure, atomic_write_json

CHART_OPERATORS = 20


def operator_rows(ops: Sequence[OperatorTiming]) -> list[dict[str, Any]]:
    """The JSON form of the profile: one object per operator, slowest first."""
    return [{**asdict(op), "mean_ms": op.avg_ms} for op in ops]


def write_operator_profile(
    ops: Sequence[OperatorTiming], directory: Path, title: str, per_lut_operator: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``operators.json`` (with the per-LUT-operator view, when the network is one of ours) and
    ``operators.png`` into ``directory``; returns their paths."""
    from matplotlib.figure import Figure  # object API: no global backend or pyplot state

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "operators.json", "plot": directory / "operators.png"}
    document = {"title": title, "operators": operator_rows(ops), "per_lut_operator": per_lut_operator}
    atomic_write_json(paths["json"], document)
    shown = list(ops[:CHART_OPERATORS])[::-1]  # slowest at the top
    fig = Figure(figsize=(8.0, 0.32 * max(len(shown), 4) + 1.2))
    ax = fig.add_subplot()
    ax.barh([f"{op.name[:40]} ({op.node_type})" for op in shown], [op.avg_ms for op in shown], color="#4477aa")
    ax.set_xlabel("mean time per inference (ms)")
    more = f" (slowest {len(shown)} of {len(ops)})" if len(ops) > len(shown) else ""
    ax.set_title(f"{title}{more}", fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    atomic_write_figure(paths["plot"], fig, dpi=110)
    return paths
