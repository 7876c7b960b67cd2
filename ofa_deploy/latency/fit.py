"""Fit a latency table from end-to-end measurements of sampled sub-networks (``ofa-deploy fit``).

The fitted table is an ordinary LUT: one value per key and resolution plus a per-network bias
(``metadata.call_overhead_ms``), all >= 0, so prediction stays the vectorised gather/sum of
:class:`~ofa_deploy.latency.table.CompiledTable`.

**Entries shared by geometry.** Every key of every resolution belongs to one of 96 *families*:
the 6 stem/head operators and, per stage and position (a stage's first block or a later one), the
9 (kernel, expand) choices. Within a family only the spatial size changes with the resolution, so
the entry is ``s_f * B_f(r) + t_f``: a per-family cost ``s_f`` times a basis value ``B_f(r)`` plus
a per-entry constant ``t_f`` (a launch cost: at batch 1 on a GPU it matters as much as the
per-pixel cost). ``B_f(r)`` is the operator's multiply-accumulates (fit-only), or the entry of a
profiled base table (``--lut BASE``; resolutions the base lacks get ``a + b * pixels`` fitted per
family over the ones it has). A network at resolution ``r`` costs
``bias + sum_f count_f * (s_f * B_f(r) + t_f)``: linear in the parameters.

**Shrinkage.** 96 families need 192 parameters; a few dozen measurements cannot pin them, so each
family's ``s_f``/``t_f`` is pulled towards its group's (the stage and position, or stem/head), and
each group's towards one global value (a hierarchical ridge). With a base table, the global
factor is the base's scale: families nobody measured keep the base's relative costs. The prior's
strength is chosen by k-fold cross-validation.

**Robust relative fit.** Rows are relative residuals (``predicted / measured - 1``), solved as
non-negative least squares (every parameter >= 0, so every entry and the bias are >= 0) inside
iteratively re-weighted least squares with Huber weights (scale: the residuals' MAD): heavy upper
tails, runs in a slower mode and drift are down-weighted instead of dragging the fit.

**Duplicates.** Several lines for one network (the same canonical arch) are one network whose latency
is the mean of its measurements: it is fitted once and held out as a whole, so a file repeated five
times reports the same held-out error as the file once, not the error on networks the fit has seen.

**Held-out error.** Every network is predicted by a fit that did not see it (k-fold, k <= 5);
acc5/acc10/MAPE of those predictions, the number of measurements and the method are stored in the
table's metadata (``fit``); a figure that is not a number (a Kendall tau of constant values) is
stored as null. The prior's strength is picked on the same folds from a small grid, which the
metadata says.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa_deploy.backend.fingerprint import TargetFingerprint
from ofa_deploy.errors import BadInputError, OFADeployError
from ofa_deploy.latency.measurements import Measurement
from ofa_deploy.latency.metadata import TableMetadata
from ofa_deploy.latency.table import LatencyTable
from ofa_deploy.metrics import agreement
from ofa_deploy.space.arch import EXPAND_RATIOS, KERNEL_SIZES, MAX_DEPTH, N_BLOCKS, N_STAGES, ArchBatch
from ofa_deploy.space.geometry import final_feature_size, se_channels
from ofa_deploy.space.ops import (
    BLOCK,
    FEATURE_MIX,
    FINAL_EXPAND,
    FIRST_CONV,
    LOGITS,
    POOL,
    OpSpec,
    head_ops,
    stage_block_ops,
    stem_ops,
)

METHOD = "hierarchical-ridge NNLS, Huber IRLS on relative residuals"
MIN_MEASUREMENTS = 5
MAX_FOLDS = 5
PRIOR_STRENGTHS = (0.03, 0.1, 0.3, 1.0, 3.0)
HUBER_K = 1.345
NOISE_FLOOR = 0.005  # relative residual scale below which nothing is treated as an outlier
IRLS_STEPS = 8

N_FIXED = 6  # Conv, first block, Conv_1, AvgPool2D, Conv_2, Logits: in every network once
N_CHOICES = len(KERNEL_SIZES) * len(EXPAND_RATIOS)
N_FAMILIES = N_FIXED + N_STAGES * 2 * N_CHOICES
N_GROUPS = 2 + N_STAGES * 2  # stem, head, (stage, position)
FAMILY_GROUP = np.array([0, 0, 1, 1, 1, 1] + [2 + i // N_CHOICES for i in range(N_FAMILIES - N_FIXED)])
_SLOT_GROUP = np.array([(b // MAX_DEPTH) * 2 + (b % MAX_DEPTH > 0) for b in range(N_BLOCKS)])


def _nnls():
    """``scipy.optimize.nnls`` (a lazy import: scipy is needed by this verb only)."""
    try:
        from scipy.optimize import nnls
    except ImportError:
        raise OFADeployError("ofa-deploy fit needs scipy: pip install 'scipy>=1.10'") from None
    return nnls


def family_ops(r: int, width_mult: float) -> list[OpSpec]:
    """The operator of every family at resolution ``r``, in family order."""
    blocks = [op for stage in stage_block_ops(r, width_mult) for position in stage for op in position]
    return stem_ops(r, width_mult) + head_ops(final_feature_size(r), width_mult) + blocks


def family_name(f: int) -> str:
    """A readable name of family ``f``: a stem or head operator, or ``stage<s>/<first|later>/k<k>e<e>``."""
    if f < N_FIXED:
        return ("Conv", "first_block", "Conv_1", "AvgPool2D", "Conv_2", "Logits")[f]
    group, choice = divmod(f - N_FIXED, N_CHOICES)
    k, e = KERNEL_SIZES[choice // len(EXPAND_RATIOS)], EXPAND_RATIOS[choice % len(EXPAND_RATIOS)]
    return f"stage{group // 2 + 1}/{'first' if group % 2 == 0 else 'later'}/k{k}e{e}"


def family_counts(batch: ArchBatch) -> np.ndarray:
    """``(N, 96)``: how many operators of each family every arch has."""
    n = len(batch)
    counts = np.zeros((n, N_FAMILIES))
    counts[:, :N_FIXED] = 1
    choice = np.searchsorted(KERNEL_SIZES, batch.ks) * len(EXPAND_RATIOS) + np.searchsorted(EXPAND_RATIOS, batch.e)
    families = N_FIXED + _SLOT_GROUP[None, :] * N_CHOICES + choice
    active = batch.active_mask()
    rows = np.broadcast_to(np.arange(n)[:, None], active.shape)
    np.add.at(counts, (rows[active], families[active]), 1)
    return counts


def op_macs(op: OpSpec) -> float:
    """Multiply-accumulates of one operator (millions): the fit-only basis ``B_f(r)``."""
    h_in, h_out = op.input_shape[0], op.output_shape[0]
    c_in, c_out = op.input_shape[-1], op.output_shape[-1]
    px_in, px_out = h_in * h_in, (h_out * h_out if len(op.output_shape) == 3 else 1)
    if op.kind == BLOCK:
        macs = px_in * c_in * op.mid if op.mid != c_in else 0
        macs += px_out * op.mid * op.kernel**2 + px_out * op.mid * c_out
        macs += 2 * op.mid * se_channels(op.mid) if op.se else 0
    elif op.kind == FIRST_CONV:
        macs = px_out * c_out * c_in * 9
    elif op.kind in (FINAL_EXPAND, FEATURE_MIX, LOGITS):
        macs = px_in * c_in * c_out
    elif op.kind == POOL:
        macs = px_in * c_in
    else:
        raise ValueError(f"unknown operator kind {op.kind}")
    return macs / 1e6


def _pixels(op: OpSpec) -> float:
    return float(op.output_shape[0] ** 2) if len(op.output_shape) == 3 else 1.0


# ---------------------------------------------------------------------- bases


Basis = Callable[[int], np.ndarray]  # resolution -> (96,) basis values


def macs_basis(width_mult: float) -> Basis:
    """The fit-only basis: each family's multiply-accumulates (millions) at a resolution, cached per resolution."""
    cache: dict[int, np.ndarray] = {}

    def basis(r: int) -> np.ndarray:
        if r not in cache:
            cache[r] = np.array([op_macs(op) for op in family_ops(r, width_mult)])
        return cache[r]

    return basis


def table_basis(table: LatencyTable, width_mult: float) -> Basis:
    """The base table's entries; at a resolution it lacks, ``a + b * pixels`` per family (a, b >= 0)
    fitted over the resolutions it has (one resolution: proportional to pixels)."""
    nnls = _nnls()
    known: dict[int, np.ndarray] = {}
    for r in table.resolutions:
        ops = family_ops(r, width_mult)
        if all(table.has(r, op.key) for op in ops):
            known[r] = np.array([table.value(r, op.key) for op in ops])
    if not known:
        raise BadInputError(
            f"{table.source}: no resolution of this table is complete; complete it with profile --resume"
        )
    pixels = {r: np.array([_pixels(op) for op in family_ops(r, width_mult)]) for r in known}
    coef = np.zeros((N_FAMILIES, 2))
    for f in range(N_FAMILIES):
        px = np.array([pixels[r][f] for r in known])
        values = np.array([known[r][f] for r in known])
        if np.ptp(px) == 0:
            coef[f] = (float(values.mean()), 0.0) if len(known) > 1 or px[0] == 1 else (0.0, values[0] / px[0])
        else:
            coef[f] = nnls(np.column_stack([np.ones_like(px), px]), values)[0]

    def basis(r: int) -> np.ndarray:
        if r in known:
            return known[r]
        px = np.array([_pixels(op) for op in family_ops(r, width_mult)])
        return coef[:, 0] + coef[:, 1] * px

    return basis


# ---------------------------------------------------------------------- the model


@dataclass
class Design:
    """What the fit sees of a set of archs: family counts and basis sums."""

    counts: np.ndarray  # (N, F)
    sums: np.ndarray  # (N, F): counts * B_f(r_i)

    @classmethod
    def build(cls, batch: ArchBatch, basis: Basis) -> Design:
        counts = family_counts(batch)
        rows = np.stack([basis(int(r)) for r in batch.r]) if len(batch) else np.zeros((0, N_FAMILIES))
        return cls(counts, counts * rows)

    def __getitem__(self, index: np.ndarray) -> Design:
        return Design(self.counts[index], self.sums[index])

    def __len__(self) -> int:
        return len(self.counts)


@dataclass
class Parameters:
    """The fitted model: per-network ``bias`` (ms); per family a cost ``s`` per basis unit and a constant ``t`` (ms)."""

    bias: float
    s: np.ndarray  # (F,) cost per basis unit
    t: np.ndarray  # (F,) constant per operator

    def predict(self, design: Design) -> np.ndarray:
        return self.bias + design.sums @ self.s + design.counts @ self.t

    def entries(self, basis_values: np.ndarray) -> np.ndarray:
        return self.s * basis_values + self.t


def _huber_weights(relative: np.ndarray) -> np.ndarray:
    centred = relative - np.median(relative)
    scale = max(1.4826 * float(np.median(np.abs(centred))), NOISE_FLOOR)
    size = np.abs(relative) / (HUBER_K * scale)
    return np.where(size <= 1, 1.0, 1.0 / np.maximum(size, 1e-12))


def _irls(data: np.ndarray, y: np.ndarray, penalty: np.ndarray | None = None) -> np.ndarray:
    """Non-negative ``x`` minimising the Huber loss of ``data @ x / y - 1`` plus ``|penalty @ x|^2``."""
    nnls = _nnls()
    relative_rows = data / y[:, None]
    weights = np.ones(len(y))
    x = np.zeros(data.shape[1])
    extra = np.zeros((0, data.shape[1])) if penalty is None else penalty
    for _ in range(IRLS_STEPS):
        root = np.sqrt(weights)[:, None]
        a = np.vstack([relative_rows * root, extra])
        b = np.concatenate([root[:, 0], np.zeros(len(extra))])
        x_new = nnls(a, b, maxiter=50 * a.shape[1])[0]
        converged = np.allclose(x_new, x, rtol=1e-4, atol=1e-9)
        x = x_new
        if converged:
            break
        weights = _huber_weights(relative_rows @ x - 1.0)
    return x


def _fit(design: Design, y: np.ndarray, strength: float) -> Parameters:
    """The hierarchical fit: unknowns ``[bias, s (F), t (F), u (G), tau (G), u0, tau0]``, all >= 0."""
    n_ops = design.counts.sum(axis=1)
    # 1. one global scale: y ~ bias + u0 * sum(B) + tau0 * ops (sets the prior's units)
    _, u0, _ = _irls(np.column_stack([np.ones(len(y)), design.sums.sum(axis=1), n_ops]), y)
    scale_s = max(u0 if u0 > 0 else float(np.median(y / np.maximum(design.sums.sum(axis=1), 1e-12))), 1e-12)
    scale_t = 0.25 * float(np.median(y / n_ops))
    f, g = N_FAMILIES, N_GROUPS
    i_s, i_t, i_u, i_tau, i_u0, i_tau0 = 1, 1 + f, 1 + 2 * f, 1 + 2 * f + g, 1 + 2 * f + 2 * g, 2 + 2 * f + 2 * g
    n_par = i_tau0 + 1
    data = np.zeros((len(y), n_par))
    data[:, 0] = 1.0
    data[:, i_s : i_s + f] = design.sums
    data[:, i_t : i_t + f] = design.counts
    rows = []
    for child, parent, scale, n_child, groups in (
        (i_s, i_u, scale_s, f, FAMILY_GROUP),
        (i_t, i_tau, scale_t, f, FAMILY_GROUP),
        (i_u, i_u0, scale_s, g, None),
        (i_tau, i_tau0, scale_t, g, None),
    ):
        block = np.zeros((n_child, n_par))
        block[np.arange(n_child), child + np.arange(n_child)] = strength / scale
        parents = parent + (groups if groups is not None else np.zeros(n_child, dtype=int))
        block[np.arange(n_child), parents] = -strength / scale
        rows.append(block)
    x = _irls(data, y, np.vstack(rows))
    return Parameters(float(x[0]), x[i_s : i_s + f], x[i_t : i_t + f])


def _folds(n: int, seed: int) -> list[np.ndarray]:
    k = min(MAX_FOLDS, n)
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def _out_of_fold(design: Design, y: np.ndarray, strength: float, folds: Sequence[np.ndarray]) -> np.ndarray:
    predicted = np.empty(len(y))
    for held in folds:
        train = np.setdiff1d(np.arange(len(y)), held)
        predicted[held] = _fit(design[train], y[train], strength).predict(design[held])
    return predicted


def _robust_score(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute relative error with each error capped at 50% (an outlier measurement counts, but once)."""
    return float(np.mean(np.minimum(np.abs(predicted / measured - 1.0), 0.5)))


def merge_duplicates(measurements: Sequence[Measurement]) -> tuple[ArchBatch, np.ndarray]:
    """One row per distinct network (canonical form), in the order first seen, with the mean of its
    measured latencies."""
    batch = ArchBatch.from_archs([m.arch for m in measurements])
    canonical = batch.canonical()
    rows = np.concatenate([canonical.ks, canonical.e, canonical.d, canonical.r[:, None]], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique rows in first-seen order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = rank[inverse.reshape(-1)]
    latency = np.array([m.latency_ms for m in measurements], dtype=np.float64)
    y = np.bincount(group, weights=latency) / np.bincount(group)
    return batch[first[order]], y


def _finite_or_none(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if np.isfinite(v) else None) for k, v in metrics.items()}


@dataclass
class FitResult:
    """A fit and how well it predicts: parameters, basis, prior strength, held-out figures, what was measured."""

    parameters: Parameters
    basis: Basis
    strength: float
    held_out: dict[str, float | None]
    held_out_predicted: np.ndarray
    measured: np.ndarray  # one latency per distinct network (the mean of its lines)
    measured_resolutions: list[int]
    networks_with: dict[int, np.ndarray]  # resolution -> how many measured networks held each family's entry
    scores: dict[str, float] = field(default_factory=dict)
    lines: int = 0  # measurement lines read (duplicates included)

    def predict(self, batch: ArchBatch) -> np.ndarray:
        return self.parameters.predict(Design.build(batch, self.basis))

    def summary(self, base: str | None, seed: int, folds: int) -> dict[str, Any]:
        """What the table's metadata records about the fit."""
        return {
            "method": METHOD,
            "basis": "base table entries" if base else "multiply-accumulates",
            "base": base,
            "measurements": self.lines or len(self.measured),
            "networks": len(self.measured),
            "measured_resolutions": self.measured_resolutions,
            "held_out": {"folds": folds, **self.held_out},
            "prior_strength": self.strength,
            "prior_strength_selection": f"k-fold on the same folds, from {list(PRIOR_STRENGTHS)}",
            "seed": seed,
        }


def fit_measurements(
    measurements: Sequence[Measurement],
    width_mult: float,
    base: LatencyTable | None = None,
    seed: int = 0,
    strengths: Sequence[float] = PRIOR_STRENGTHS,
    progress: bool = False,
) -> FitResult:
    """Fit the model to ``measurements`` (choosing the prior strength by k-fold cross-validation)."""
    batch, y = merge_duplicates(measurements) if measurements else (ArchBatch.empty(), np.zeros(0))
    if len(y) < MIN_MEASUREMENTS:
        repeated = f" in {len(measurements)} lines" if len(measurements) != len(y) else ""
        raise BadInputError(
            f"fit needs at least {MIN_MEASUREMENTS} measurements of distinct networks (found {len(y)}{repeated}); "
            "measure more sub-networks, e.g. with `ofa-deploy validate --save-measurements M.jsonl`"
        )
    basis = macs_basis(width_mult) if base is None else table_basis(base, width_mult)
    design = Design.build(batch, basis)
    folds = _folds(len(y), seed)
    from tqdm import tqdm

    candidates = {
        s: _out_of_fold(design, y, s, folds)
        for s in tqdm(strengths, desc="cross-validating", unit="prior", disable=not progress or None, file=sys.stderr)
    }
    scores = {s: _robust_score(p, y) for s, p in candidates.items()}
    strength = min(scores, key=lambda s: (scores[s], -s))  # ties: the stronger prior
    held = candidates[strength]
    metrics = agreement(held, y)
    metrics["median_abs_rel"] = float(np.median(np.abs(held / y - 1.0)))
    metrics = _finite_or_none(metrics)  # strict JSON in the table's metadata: no NaN
    return FitResult(
        parameters=_fit(design, y, strength),
        basis=basis,
        strength=strength,
        held_out=metrics,
        held_out_predicted=held,
        measured=y,
        measured_resolutions=sorted({int(r) for r in batch.r}),
        networks_with={int(r): (design.counts[batch.r == r] > 0).sum(axis=0) for r in np.unique(batch.r)},
        scores={str(s): v for s, v in scores.items()},
        lines=len(measurements),
    )


def fitted_table(
    result: FitResult,
    resolutions: Sequence[int],
    width_mult: float,
    base: LatencyTable | None = None,
    seed: int = 0,
    target: TargetFingerprint | None = None,
    precision: str | None = None,
) -> LatencyTable:
    """The fit as an ordinary LUT: entries at ``resolutions``, the bias as the per-call overhead. Its
    target is ``target``, the one the measurements were made on (:func:`measured_target`), where they
    say; else the base table's. A base of the same backend also lends its settings, timing and drift
    reference. The precision is the measurements' (``precision``, else the target's), never the base's: an
    fp32 base fits int8 measurements into an int8 table."""
    tables: dict[int, dict[str, dict[str, float]]] = {}
    for r in resolutions:
        values = result.parameters.entries(result.basis(r))
        ops = family_ops(r, width_mult)
        seen = result.networks_with.get(r, np.zeros(N_FAMILIES, dtype=int))
        tables[r] = {op.key: {"count": int(seen[f]), "mean": float(values[f]), "std": 0.0} for f, op in enumerate(ops)}
    inherited: dict[str, Any] = {}
    if base is not None and (target is None or target.backend in (None, base.metadata.backend)):
        m = base.metadata  # the same backend: its settings, timing and drift reference hold for the fit
        inherited = {
            "device": m.device,
            "backend": m.backend,
            "runtime": m.runtime,
            "runtime_version": m.runtime_version,
            "threads": m.threads,
            "timing": m.timing,
            "settings": dict(m.settings),
            "reference": m.reference,
            "target": m.target,
            "conditions": m.conditions,
        }
    if target is not None:  # the table belongs to the target measured, not to the base's
        measured = {
            "device": target.device,
            "backend": target.backend,
            "runtime": target.runtime,
            "runtime_version": target.runtime_version,
            "threads": target.threads,
            "target": dict(target.identity) or None,
        }
        inherited.update({k: v for k, v in measured.items() if v is not None})
        if target.identity:
            inherited.pop("conditions", None)  # the base device's conditions say nothing about this one
    precision = precision or (target.precision if target is not None else None)
    if precision is not None:
        inherited["settings"] = {**inherited.get("settings", {}), "precision": precision}
    metadata = TableMetadata.new(
        **inherited,
        width_mult=width_mult,
        resolutions=sorted(resolutions),
        call_overhead_ms=result.parameters.bias,
        fit=result.summary(None if base is None else base.source, seed, min(MAX_FOLDS, len(result.measured))),
    )
    return LatencyTable(tables=tables, metadata=metadata)
