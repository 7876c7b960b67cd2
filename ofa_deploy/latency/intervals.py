"""Latency intervals and tail bounds that hold, learned by split conformal prediction.

A LUT sum (calibrated) is a point estimate of a network's robust latency (the figure the protocol
measures: the median of round minima). ``validate`` measures whole networks, and for each keeps
that figure and the median, p90 and p99 of all its runs; on the calibration half it learns a
two-sided factor on ``|log(measured/predicted)|`` for the robust figure, and, per quantile q, the
factor by which the network's q-quantile can exceed the prediction (each the ``ceil((n+1)·level)``-th
smallest score: split conformal prediction, which assumes nothing about the errors' distribution).
So ``pred × upper[q]`` bounds a new network's q-quantile latency
with probability ``level`` over networks like those validated; the held-out half reports how often
it did. Search uses ``upper[q]`` to keep only networks whose bound fits a deadline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa_deploy.errors import BadInputError

LEVEL = 0.9  # the confidence of every interval and bound
QUANTILES = (0.5, 0.9, 0.99)  # latency quantiles whose bounds are learned (the run-to-run distribution)


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank of the calibration score that bounds a new one with probability ``level``
    (``ceil((n+1)·level)``), capped at ``n`` (then the guarantee is only ``n/(n+1)``)."""
    return min(n, math.ceil((n + 1) * level))


@dataclass(frozen=True)
class LatencyIntervals:
    """Multiplicative factors on the calibrated prediction, learned on ``fitted_on`` networks."""

    level: float
    low: float  # the median's interval: [pred x low, pred x high]
    high: float
    upper: dict[str, float]  # latency quantile ("0.9") -> bound factor on it
    fitted_on: int
    coverage: dict[str, float] = field(default_factory=dict)  # on the held-out half: "interval", "0.9", ...
    held_out: int = 0

    @classmethod
    def fit(
        cls, predicted: np.ndarray, robust: np.ndarray, quantiles: Mapping[float, np.ndarray], level: float = LEVEL
    ) -> LatencyIntervals:
        """From calibrated predictions, the measured robust figures and the measured run quantiles
        (``{0.5: medians, 0.9: p90s, 0.99: p99s}``) of the same networks."""
        n = len(predicted)
        if n < 2:
            raise BadInputError("an interval needs at least 2 calibration networks")
        k = conformal_rank(n, level) - 1
        spread = np.sort(np.abs(np.log(robust / predicted)))[k]
        upper = {f"{q:g}": float(np.sort(quantiles[q] / predicted)[k]) for q in QUANTILES}
        return cls(level, float(math.exp(-spread)), float(math.exp(spread)), upper, n)

    def with_coverage(
        self, predicted: np.ndarray, robust: np.ndarray, quantiles: Mapping[float, np.ndarray]
    ) -> LatencyIntervals:
        """These intervals with how often they held on networks they were not fitted on."""
        inside = (robust >= predicted * self.low) & (robust <= predicted * self.high)
        coverage = {"interval": float(inside.mean())}
        for q in QUANTILES:
            coverage[f"{q:g}"] = float((quantiles[q] <= predicted * self.upper[f"{q:g}"]).mean())
        return LatencyIntervals(self.level, self.low, self.high, self.upper, self.fitted_on, coverage, len(predicted))

    def bound(self, predicted: float, quantile: float) -> float:
        """The upper bound of the ``quantile`` latency of a network predicted at ``predicted`` ms."""
        return predicted * self.factor(quantile)

    def factor(self, quantile: float) -> float:
        key = f"{quantile:g}"
        if key not in self.upper:
            raise BadInputError(
                f"--quantile {quantile:g}: the table's intervals bound the latency quantiles "
                f"{', '.join(self.upper)} (validate learns them)"
            )
        return self.upper[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "low": self.low,
            "high": self.high,
            "upper": dict(self.upper),
            "fitted_on": self.fitted_on,
            "coverage": dict(self.coverage),
            "held_out": self.held_out,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LatencyIntervals:
        """Read back :meth:`to_dict`; BadInputError naming ``where`` and the field."""
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: 'intervals' must be an object")

        def factor(value: Any, name: str) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise BadInputError(f"{where}: intervals '{name}' is {value!r} (must be a finite number > 0)")
            return float(value)

        upper = data.get("upper")
        if not isinstance(upper, dict) or not upper:
            raise BadInputError(f"{where}: intervals 'upper' must map latency quantiles to factors")
        level = factor(data.get("level"), "level")
        if not level < 1:
            raise BadInputError(f"{where}: intervals 'level' is {level} (must be below 1)")
        coverage = data.get("coverage") or {}
        if not isinstance(coverage, dict):
            raise BadInputError(f"{where}: intervals 'coverage' must be an object")
        fitted_on, held_out = data.get("fitted_on", 0), data.get("held_out", 0)
        if not all(type(v) is int and v >= 0 for v in (fitted_on, held_out)):
            raise BadInputError(f"{where}: intervals 'fitted_on'/'held_out' must be counts")
        return cls(
            level,
            factor(data.get("low"), "low"),
            factor(data.get("high"), "high"),
            {str(k): factor(v, f"upper.{k}") for k, v in upper.items()},
            fitted_on,
            {str(k): float(v) for k, v in coverage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            held_out,
        )
