"""Measured vs predicted latency: one scatter panel per backend (or per prediction), with ±5% and ±10% bands.

``validate`` writes it into its report directory (LUT sum and calibrated side by side); the
fidelity benchmark draws one panel per backend. Points used to fit something (a calibration, a
fit) are grey; the held-out points the figures in each title come from are blue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa_deploy.files import atomic_write_figure
from ofa_deploy.metrics import within


@dataclass
class FidelitySeries:
    """One panel: measured and predicted latency (ms) of the same sub-networks."""

    title: str
    measured: np.ndarray
    predicted: np.ndarray
    held_out: np.ndarray | None = None  # boolean mask; None: every point is held out

    def held(self) -> np.ndarray:
        return np.ones(len(self.measured), dtype=bool) if self.held_out is None else np.asarray(self.held_out)

    def accuracy(self) -> tuple[float, float]:
        """(acc5, acc10) of the held-out points."""
        mask = self.held()
        return within(self.predicted[mask], self.measured[mask], 0.05), within(
            self.predicted[mask], self.measured[mask], 0.10
        )


def plot_fidelity(series: Sequence[FidelitySeries], path: Path, title: str = "", columns: int = 3) -> None:
    """Write the figure atomically (PNG or anything matplotlib writes from the suffix)."""
    from matplotlib.figure import Figure  # object API: no global backend or pyplot state

    n = len(series)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.8 * cols, 4.5 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, one in zip(axes, series):
        _panel(ax, one)
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    atomic_write_figure(Path(path), fig, dpi=110)


def _panel(ax, one: FidelitySeries) -> None:
    measured, predicted = np.asarray(one.measured, float), np.asarray(one.predicted, float)
    held = one.held()
    lo = float(min(measured.min(), predicted.min())) * 0.9
    hi = float(max(measured.max(), predicted.max())) * 1.1
    xs = np.linspace(lo, hi, 20)
    ax.fill_between(xs, xs * 0.90, xs * 1.10, color="tab:green", alpha=0.10, label="±10%")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="tab:green", alpha=0.22, label="±5%")
    ax.plot(xs, xs, "k-", lw=0.8, label="measured = predicted")
    if not held.all():
        ax.scatter(measured[~held], predicted[~held], s=12, alpha=0.5, color="tab:gray", label="fit")
    ax.scatter(measured[held], predicted[held], s=14, alpha=0.85, color="tab:blue", label="held out")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    acc5, acc10 = one.accuracy()
    ax.set_title(f"{one.title}\nheld out (n={int(held.sum())}): ±5% {acc5:.0%}, ±10% {acc10:.0%}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
