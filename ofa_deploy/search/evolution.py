"""Hardware-aware search over the OFA space, using only predictors (seconds, no training).

* :func:`evolutionary_search`: the official OFA evolutionary search (population 100, 500
  generations, 25 parents, 50 mutants + 50 crossovers per generation, mutation probability 0.1),
  vectorised over the whole population, under one or more constraints.
* :func:`pareto_search`: NSGA-II over (predicted accuracy, latency on one table) with the other
  constraints as filters; every evaluated feasible arch goes into an archive whose non-dominated
  set is the returned front, so one run answers every budget.

Constraints that no sub-network can meet are found up front, exactly (per-slot minima, see
:mod:`ofa_deploy.space.slot_table`), and reported with the smallest reachable value; a barely feasible
constraint still terminates because the starting population is seeded with the arch that
minimises each constraint, and every refill loop has a bounded number of tries.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ofa_deploy.errors import BadInputError
from ofa_deploy.latency.table import LatencyTable
from ofa_deploy.search.predictors import MLPPredictor, load_accuracy_predictor
from ofa_deploy.space.analytics import metric_tables
from ofa_deploy.space.arch import Arch, ArchBatch, crossover_batch, mutate_batch, sample_batch

MAX_REFILL_TRIES = 30


class InfeasibleConstraintError(BadInputError):
    """No sub-network of the space meets the constraint(s)."""


@dataclass
class Constraint:
    """``evaluate(batch) <= limit``; ``minimum(resolutions)`` is the smallest value reachable."""

    name: str
    unit: str
    limit: float
    evaluate: Callable[[ArchBatch], np.ndarray]
    minimum: Callable[[Sequence[int]], tuple[float, Arch]]

    def describe(self, value: float) -> str:
        return f"{self.name} {value:.3f} {self.unit}"


def latency_constraint(
    table: LatencyTable, limit_ms: float, name: str | None = None, quantile: float | None = None
) -> Constraint:
    """Predicted latency on ``table`` (calibrated if it is) at most ``limit_ms``; named after ``name`` or
    the table. With ``quantile`` (0.5, 0.9, 0.99), the bound on that quantile of the network's run
    latencies is kept within the limit instead: the prediction times the table's conformal factor
    (:mod:`ofa_deploy.latency.intervals`, learned by ``validate``)."""
    compiled = table.compiled()
    factor = 1.0 if quantile is None else tail_factor(table, quantile)

    def minimum(resolutions: Sequence[int]) -> tuple[float, Arch]:
        # a table missing keys (an interrupted profile) has no exact minimum: name a missing key and --resume
        table.check_complete(resolutions)
        value, arch = compiled.slot_table.minimum(np.asarray(resolutions))
        if table.calibration is not None:
            value = float(table.calibration.apply(value))
        return value * factor, arch

    def evaluate(batch: ArchBatch) -> np.ndarray:
        return table.predict_batch(batch) * factor

    label = "latency" if quantile is None else f"latency p{quantile * 100:g}"
    scored = table.predict_batch if quantile is None else evaluate
    return Constraint(f"{label}[{name or table.name}]", "ms", limit_ms, scored, minimum)


def tail_factor(table: LatencyTable, quantile: float) -> float:
    """The table's bound factor on a latency quantile; BadInputError when ``validate`` has not learned it."""
    intervals = table.calibration.intervals if table.calibration is not None else None
    if intervals is None:
        raise BadInputError(
            f"{table.source} holds no latency intervals, so --quantile {quantile:g} cannot be bounded: run "
            "`ofa-deploy validate` on it (a timed backend) first"
        )
    return intervals.factor(quantile)


def metric_constraint(metric: str, limit: float, width_mult: float, resolutions: Sequence[int]) -> Constraint:
    """``flops_m`` (M multiply-accumulates), ``params_m`` (M) or ``memory_mb`` (MiB, peak activations)."""
    tables = metric_tables(width_mult, tuple(resolutions))
    unit = {"flops_m": "MFLOPs", "params_m": "M params", "memory_mb": "MiB"}[metric]
    table = tables[metric]
    return Constraint(metric, unit, limit, table.evaluate, lambda res: table.minimum(np.asarray(res)))


@dataclass
class Objective:
    """What the search maximises: predicted accuracy, or FLOPs as a clearly labelled proxy."""

    name: str
    score: Callable[[ArchBatch], np.ndarray]
    is_accuracy: bool
    precision: str | None = None  # an accuracy predictor's: the precision its accuracies were measured at

    @classmethod
    def accuracy(cls, predictor: MLPPredictor) -> Objective:
        return cls("predicted top-1 accuracy", predictor.predict_batch, True, predictor.precision)

    @classmethod
    def flops_proxy(cls, width_mult: float, resolutions: Sequence[int]) -> Objective:
        table = metric_tables(width_mult, tuple(resolutions))["flops_m"]
        return cls("FLOPs (proxy for accuracy: no accuracy predictor given)", table.evaluate, False)


def choose_objective(predictor_path: str | Path | None, width_mult: float, resolutions: Sequence[int]) -> Objective:
    """What ``search`` and ``demo`` maximise: the accuracy predictor's top-1 when one is given, else FLOPs
    as a labelled proxy. A predictor made for another width multiplier than the latency tables' is
    refused (BadInputError): its accuracies would be those of other networks."""
    if not predictor_path:
        return Objective.flops_proxy(width_mult, resolutions)
    predictor = load_accuracy_predictor(predictor_path)
    made_for = predictor.width_mult
    if made_for is not None and abs(made_for - width_mult) > 1e-9:
        raise BadInputError(
            f"{predictor_path}: an accuracy predictor for w{made_for:g} sub-networks, but the latency tables are "
            f"w{width_mult:g} (its accuracies would be of other networks); use tables of w{made_for:g} "
            f"(--width-mult {made_for:g}) or a predictor trained on w{width_mult:g}"
        )
    return Objective.accuracy(predictor)


@dataclass
class SearchResult:
    """The best arch an evolutionary search found, its score and constraint values, and what the search cost."""

    arch: Arch
    score: float
    objective: Objective
    values: dict[str, float]  # constraint name -> value of the best arch
    seconds: float
    evaluated: int
    history: list[float] = field(default_factory=list)  # best score after each generation


@dataclass
class ParetoResult:
    """The front of :func:`pareto_search` (score vs latency on one table) and every feasible point it saw."""

    archs: list[Arch]
    scores: np.ndarray
    latency: np.ndarray
    values: list[dict[str, float]]
    objective: Objective
    latency_name: str
    seconds: float
    evaluated: int
    cloud: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))  # every feasible (latency, score) seen


# ---------------------------------------------------------------------- feasibility


def check_feasible(constraints: Sequence[Constraint], resolutions: Sequence[int]) -> list[Arch]:
    """Raise :class:`InfeasibleConstraintError` for a constraint no arch meets; return the arch
    minimising each constraint (the seeds of the search)."""
    seeds = []
    for c in constraints:
        value, arch = c.minimum(resolutions)
        if value > c.limit + 1e-9:
            raise InfeasibleConstraintError(
                f"no sub-network meets {c.name} <= {c.limit:g} {c.unit}: the smallest reachable is "
                f"{value:.3f} {c.unit} (at resolution {arch.r}); raise the limit to at least that"
            )
        seeds.append(arch)
    return seeds


def _feasible_mask(batch: ArchBatch, constraints: Sequence[Constraint]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    values = {c.name: c.evaluate(batch) for c in constraints}
    ok = np.ones(len(batch), dtype=bool)
    for c in constraints:
        ok &= values[c.name] <= c.limit
    return ok, values


def _collect_feasible(
    make: Callable[[int], ArchBatch], need: int, constraints: Sequence[Constraint], tries: int = MAX_REFILL_TRIES
) -> ArchBatch:
    """Up to ``need`` feasible candidates from ``make(n)``, in at most ``tries`` rounds."""
    found = ArchBatch.empty()
    for _ in range(tries):
        if len(found) >= need:
            break
        candidates = make(max(need - len(found), 1) * 2)
        ok, _ = _feasible_mask(candidates, constraints)
        found = found.concat(candidates[np.nonzero(ok)[0]])
    return found[np.arange(min(need, len(found)))]


def initial_population(
    rng: np.random.Generator, size: int, constraints: Sequence[Constraint], resolutions: Sequence[int]
) -> ArchBatch:
    """A population of ``size`` archs that meet every constraint, seeded with each one's minimiser (copies fill it up).
    InfeasibleConstraintError when no arch meets them all."""
    seeds = check_feasible(constraints, resolutions)
    seed_batch = ArchBatch.from_archs(seeds)
    ok, _ = _feasible_mask(seed_batch, constraints)
    pool = seed_batch[np.nonzero(ok)[0]]
    pool = pool.concat(_collect_feasible(lambda n: sample_batch(rng, n, resolutions), size - len(pool), constraints))
    if len(pool) < size and len(pool) > 0:  # barely feasible: grow from what meets the constraints
        pool = pool.concat(
            _collect_feasible(
                lambda n: mutate_batch(pool[rng.integers(0, len(pool), n)], rng, 0.2, resolutions),
                size - len(pool),
                constraints,
            )
        )
    if len(pool) == 0:
        names = ", ".join(f"{c.name} <= {c.limit:g} {c.unit}" for c in constraints)
        raise InfeasibleConstraintError(
            f"no sub-network meets all of {names} together (each alone is reachable); relax one of them"
        )
    while len(pool) < size:  # fill with copies so the population keeps its size
        pool = pool.concat(pool[np.arange(min(len(pool), size - len(pool)))])
    return pool


def common_resolutions(tables: Sequence[LatencyTable], allowed: Sequence[int]) -> tuple[int, ...]:
    """Resolutions every table covers (the official Note10 tables cover 160..224 step 16 only)."""
    res = set(allowed)
    for t in tables:
        res &= set(t.resolutions)
    if not res:
        covered = "; ".join(f"{t.name}: {t.resolutions}" for t in tables)
        raise BadInputError(f"the latency tables share no resolution ({covered})")
    return tuple(sorted(res))


# ---------------------------------------------------------------------- evolutionary search


class ScoreCache:
    """Memoised objective: evolution keeps proposing networks it has already scored (late
    generations mostly recombine near-identical parents), so each distinct network is scored once."""

    def __init__(self, score: Callable[[ArchBatch], np.ndarray]) -> None:
        self.score = score
        self.store: dict[bytes, float] = {}

    @staticmethod
    def keys(batch: ArchBatch) -> list[bytes]:
        c = batch.canonical()
        table = np.concatenate([c.ks, c.e, c.d, c.r[:, None] // 4], axis=1).astype(np.uint8)
        return [row.tobytes() for row in table]

    def __call__(self, batch: ArchBatch) -> np.ndarray:
        keys = self.keys(batch)
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self.store and key not in missing:
                missing[key] = i
        if missing:
            values = self.score(batch[np.fromiter(missing.values(), dtype=np.int64)])
            self.store.update(zip(missing, values.tolist()))
        return np.fromiter((self.store[k] for k in keys), dtype=np.float64, count=len(keys))


def _single_threaded_blas():
    """Scoring 100 archs is a few small matrix products: BLAS threads only add synchronisation,
    and on a loaded 2-core machine they made the search 3-10x slower."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs: the evaluator's budget and its randomness. The defaults are the official OFA
    evolutionary search's; :data:`PARETO_SEARCH` holds NSGA-II's."""

    population: int = 100
    generations: int = 500
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.population < 4 or self.generations < 1:
            raise BadInputError("population must be at least 4 and generations at least 1")

    def for_pareto(self) -> SearchConfig:
        """This budget within what NSGA-II needs: enough points for a front (a population of at least
        100), and at most 300 generations, so a front takes seconds."""
        return dataclasses.replace(
            self,
            population=max(self.population, PARETO_MIN_POPULATION),
            generations=min(self.generations, PARETO_MAX_GENERATIONS),
        )


PARETO_MIN_POPULATION, PARETO_MAX_GENERATIONS = 100, 300
PARETO_SEARCH = SearchConfig(population=200, generations=150)


def evolutionary_search(
    objective: Objective,
    constraints: Sequence[Constraint],
    resolutions: Sequence[int],
    config: SearchConfig = SearchConfig(),
) -> SearchResult:
    """The official OFA evolutionary search: the arch that maximises ``objective`` under every constraint."""
    with _single_threaded_blas():
        return _evolve(objective, constraints, resolutions, config)


def _evolve(objective, constraints, resolutions, config: SearchConfig) -> SearchResult:
    population, generations, seed, progress = config.population, config.generations, config.seed, config.progress
    parent_ratio, mutation_ratio, mutate_prob = config.parent_ratio, config.mutation_ratio, config.mutate_prob
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_parents = max(2, int(round(parent_ratio * population)))
    n_mutants = int(round(mutation_ratio * population))
    n_crossovers = population - n_mutants

    score = ScoreCache(objective.score)
    pop = initial_population(rng, population, constraints, resolutions)
    scores = score(pop)
    evaluated = len(pop)
    history: list[float] = []
    best_arch, best_score = pop[[int(np.argmax(scores))]], float(scores.max())

    from tqdm import tqdm

    for _ in tqdm(range(generations), desc="searching", unit="gen", disable=not progress or None, leave=False):
        order = np.argsort(-scores, kind="stable")[:n_parents]
        parents, parent_scores = pop[order], scores[order]
        if parent_scores[0] > best_score:
            best_arch, best_score = parents[[0]], float(parent_scores[0])
        history.append(best_score)

        mutants = _collect_feasible(
            lambda n, p=parents: mutate_batch(p[rng.integers(0, n_parents, n)], rng, mutate_prob, resolutions),
            n_mutants,
            constraints,
        )
        crossed = _collect_feasible(
            lambda n, p=parents: crossover_batch(
                p[rng.integers(0, n_parents, n)], p[rng.integers(0, n_parents, n)], rng
            ),
            n_crossovers,
            constraints,
        )
        children = mutants.concat(crossed)
        child_scores = score(children) if len(children) else np.zeros(0)
        evaluated += len(children)
        pop = parents.concat(children)
        scores = np.concatenate([parent_scores, child_scores])

    i = int(np.argmax(scores))
    if scores[i] > best_score:
        best_arch, best_score = pop[[i]], float(scores[i])
    _, values = _feasible_mask(best_arch, constraints)
    return SearchResult(
        arch=best_arch.to_archs()[0],
        score=best_score,
        objective=objective,
        values={k: float(v[0]) for k, v in values.items()},
        seconds=time.perf_counter() - start,
        evaluated=evaluated,
        history=history,
    )


# ---------------------------------------------------------------------- NSGA-II


def non_dominated_ranks(objectives: np.ndarray) -> np.ndarray:
    """Front index (0 = Pareto front) of each row of an (N, 2) array, both objectives minimised.

    A sweep in order of the first objective: each front keeps the point with the smallest second
    objective seen so far, and those minima increase with the front index, so a point's front is
    found by binary search. O(N log N) instead of the O(N^2) pairwise comparison.
    """
    f1, f2 = objectives[:, 0], objectives[:, 1]
    order = np.lexsort((f2, f1))
    ranks = np.empty(len(order), dtype=np.int64)
    front_f1: list[float] = []  # per front: the point with the smallest f2 so far
    front_f2: list[float] = []
    for i in order.tolist():
        a, b = f1[i], f2[i]
        lo, hi = 0, len(front_f2)
        while lo < hi:  # first front that does not dominate (a, b)
            mid = (lo + hi) // 2
            dominated = front_f2[mid] < b or (front_f2[mid] == b and front_f1[mid] < a)
            if dominated:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(front_f2):
            front_f1.append(a)
            front_f2.append(b)
        elif b < front_f2[lo] or (b == front_f2[lo] and a < front_f1[lo]):
            front_f1[lo], front_f2[lo] = a, b
        ranks[i] = lo
    return ranks


def pareto_front_2d(cost: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (minimise ``cost``, maximise ``gain``), by increasing
    cost: O(N log N), for archives far too large for pairwise dominance."""
    order = np.lexsort((-gain, cost))
    best_so_far = np.maximum.accumulate(gain[order])
    keep = np.ones(order.size, dtype=bool)
    keep[1:] = gain[order][1:] > best_so_far[:-1]
    return order[keep]


def crowding_distance(objectives: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point within its front; a front's end points (and fronts of <= 2) get inf."""
    distance = np.zeros(objectives.shape[0])
    for r in np.unique(ranks):
        idx = np.nonzero(ranks == r)[0]
        if idx.size <= 2:
            distance[idx] = np.inf
            continue
        for m in range(objectives.shape[1]):
            values = objectives[idx, m]
            order = np.argsort(values, kind="stable")
            span = values[order[-1]] - values[order[0]] or 1.0
            distance[idx[order[0]]] = distance[idx[order[-1]]] = np.inf
            distance[idx[order[1:-1]]] += (values[order[2:]] - values[order[:-2]]) / span
    return distance


def _tournament(rng: np.random.Generator, ranks: np.ndarray, crowd: np.ndarray, n: int) -> np.ndarray:
    """Binary tournaments: lower front wins, then larger crowding distance."""
    a, b = rng.integers(0, len(ranks), n), rng.integers(0, len(ranks), n)
    a_wins = (ranks[a] < ranks[b]) | ((ranks[a] == ranks[b]) & (crowd[a] >= crowd[b]))
    return np.where(a_wins, a, b)


def pareto_search(
    objective: Objective,
    latency: Constraint,
    others: Sequence[Constraint],
    resolutions: Sequence[int],
    config: SearchConfig = PARETO_SEARCH,
) -> ParetoResult:
    """NSGA-II maximising the objective and minimising ``latency`` (up to its limit)."""
    with _single_threaded_blas():
        return _nsga2(objective, latency, others, resolutions, config)


def _nsga2(objective, latency, others, resolutions, config: SearchConfig) -> ParetoResult:
    population, generations, seed, progress = config.population, config.generations, config.seed, config.progress
    mutate_prob = config.mutate_prob
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    constraints = [latency, *others]
    pop = initial_population(rng, population, constraints, resolutions)

    def evaluate(batch: ArchBatch) -> np.ndarray:
        return np.column_stack([-objective.score(batch), latency.evaluate(batch)])

    objs = evaluate(pop)
    archive: list[tuple[ArchBatch, np.ndarray]] = [(pop, objs)]
    evaluated = len(pop)
    ranks = non_dominated_ranks(objs)
    crowd = crowding_distance(objs, ranks)

    from tqdm import tqdm

    for _ in tqdm(range(generations), desc="pareto", unit="gen", disable=not progress or None, leave=False):

        def offspring(n: int, pop=pop, ranks=ranks, crowd=crowd) -> ArchBatch:
            mothers, fathers = _tournament(rng, ranks, crowd, n), _tournament(rng, ranks, crowd, n)
            return mutate_batch(crossover_batch(pop[mothers], pop[fathers], rng), rng, mutate_prob, resolutions)

        children = _collect_feasible(offspring, population, constraints)
        if len(children) == 0:
            continue
        child_objs = evaluate(children)
        evaluated += len(children)
        archive.append((children, child_objs))
        merged, merged_objs = pop.concat(children), np.vstack([objs, child_objs])
        unique = merged.unique_rows()
        merged, merged_objs = merged[unique], merged_objs[unique]
        m_ranks = non_dominated_ranks(merged_objs)
        m_crowd = crowding_distance(merged_objs, m_ranks)
        keep = np.lexsort((-m_crowd, m_ranks))[:population]
        pop, objs, ranks, crowd = merged[keep], merged_objs[keep], m_ranks[keep], m_crowd[keep]

    archive_batch = ArchBatch(*(np.concatenate([getattr(b, f) for b, _ in archive]) for f in ("ks", "e", "d", "r")))
    archive_objs = np.vstack([o for _, o in archive])
    unique = archive_batch.unique_rows()
    archive_batch, archive_objs = archive_batch[unique], archive_objs[unique]
    front = pareto_front_2d(archive_objs[:, 1], -archive_objs[:, 0])
    front_batch = archive_batch[front]
    _, values = _feasible_mask(front_batch, constraints)
    return ParetoResult(
        archs=front_batch.to_archs(),
        scores=-archive_objs[front, 0],
        latency=archive_objs[front, 1],
        values=[{k: float(v[i]) for k, v in values.items()} for i in range(len(front))],
        objective=objective,
        latency_name=latency.name,
        seconds=time.perf_counter() - start,
        evaluated=evaluated,
        cloud=(archive_objs[:, 1], -archive_objs[:, 0]),
    )
