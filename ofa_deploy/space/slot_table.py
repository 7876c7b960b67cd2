"""Per-slot cost tables: how any additive (or max-type) cost of a sub-network is evaluated for a
whole population at once, and how its smallest reachable value is found exactly.

A cost that depends on the resolution and, per block slot, only on that slot's kernel size and
expand ratio (latency from a LUT, FLOPs, parameters) is ``fixed[r] + sum over active slots of
slots[r, slot, k, e]``; peak memory is the same with ``max`` instead of ``sum``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ofa_deploy.errors import BadInputError
from ofa_deploy.space.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, MAX_DEPTH, N_BLOCKS, N_STAGES, Arch, ArchBatch

_KS = np.asarray(KERNEL_SIZES)
_ES = np.asarray(EXPAND_RATIOS)


@dataclass
class SlotTable:
    """A cost as ``fixed[r]`` plus the sum (or max) of per-slot ``slots[r, slot, k, e]``, for whole batches."""

    name: str
    resolutions: np.ndarray  # (R,) sorted
    fixed: np.ndarray  # (R,)
    slots: np.ndarray  # (R, 20, len(KERNEL_SIZES), len(EXPAND_RATIOS)); NaN = unknown
    reduce: str = "sum"  # "sum" or "max"

    def resolution_index(self, r: np.ndarray) -> np.ndarray:
        index = np.clip(np.searchsorted(self.resolutions, r), 0, max(len(self.resolutions) - 1, 0))
        bad = (len(self.resolutions) == 0) | (self.resolutions[index] != r)
        if np.any(bad):
            missing = int(np.asarray(r)[np.argmax(bad)])
            raise BadInputError(
                f"{self.name} has no entries for resolution {missing} (it covers {self.resolutions.tolist()}); "
                f"profile it with --resolutions {missing}"
            )
        return index

    def per_slot(self, batch: ArchBatch) -> tuple[np.ndarray, np.ndarray]:
        """(resolution index (N,), per-slot costs (N, 20)) with inactive slots set to 0."""
        r_index = self.resolution_index(batch.r)
        k_index = np.searchsorted(_KS, batch.ks)
        e_index = np.searchsorted(_ES, batch.e)
        values = self.slots[r_index[:, None], np.arange(N_BLOCKS)[None, :], k_index, e_index]
        return r_index, np.where(batch.active_mask(), values, 0.0)

    def evaluate(self, batch: ArchBatch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(0)
        r_index, values = self.per_slot(batch)
        if self.reduce == "max":
            return np.maximum(self.fixed[r_index], values.max(axis=1))
        return self.fixed[r_index] + values.sum(axis=1)

    def minimum(self, resolutions: np.ndarray | None = None) -> tuple[float, Arch]:
        """The smallest value any arch reaches (at these resolutions), and an arch that reaches it.

        Exact: slots are independent given the depths, so each stage takes its best depth and each
        active slot its cheapest (k, e).
        """
        res = self.resolutions if resolutions is None else np.asarray(resolutions)
        best: tuple[float, Arch] | None = None
        for r in res.tolist():
            ri = int(self.resolution_index(np.asarray([r]))[0])
            flat = self.slots[ri].reshape(N_BLOCKS, -1)
            cheapest = np.nanmin(flat, axis=1)
            choice = np.nanargmin(flat, axis=1)
            ks = _KS[choice // len(EXPAND_RATIOS)].tolist()
            es = _ES[choice % len(EXPAND_RATIOS)].tolist()
            depths = []
            total = self.fixed[ri]
            for stage in range(N_STAGES):
                costs = cheapest[stage * MAX_DEPTH : (stage + 1) * MAX_DEPTH]
                if self.reduce == "max":
                    options = [costs[:d].max() for d in DEPTHS]
                else:
                    options = [costs[:d].sum() for d in DEPTHS]
                d_best = int(np.argmin(options))
                depths.append(DEPTHS[d_best])
                total = max(total, options[d_best]) if self.reduce == "max" else total + options[d_best]
            arch = Arch(ks=tuple(ks), e=tuple(es), d=tuple(depths), r=r)
            if best is None or total < best[0]:
                best = (float(total), arch)
        if best is None:
            raise BadInputError(f"{self.name}: no resolution to search")
        return best
