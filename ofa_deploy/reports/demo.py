"""``ofa-deploy demo``: the whole product on the host CPU, offline, in a few minutes.

profile (or reuse) a latency table -> validate and calibrate it -> search at a few latency
budgets and for the Pareto front -> compile the winners -> benchmark them -> write a report with
measured vs predicted for every bundle. Everything lands in one output folder.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy import __version__
from ofa_deploy.backend.host import describe_host
from ofa_deploy.backend.profiles import load_profile
from ofa_deploy.deploy.bundle import benchmark_bundle, compile_bundle
from ofa_deploy.files import output_lock
from ofa_deploy.latency.profiling import ProfilePlan, drift_ratio, profile, profile_metadata
from ofa_deploy.latency.table import load_lut
from ofa_deploy.latency.validation import validate
from ofa_deploy.reports.pareto import Chosen, write_pareto
from ofa_deploy.reports.validation import write_outputs
from ofa_deploy.search.evolution import (
    PARETO_SEARCH,
    SearchConfig,
    choose_objective,
    evolutionary_search,
    latency_constraint,
    pareto_search,
)
from ofa_deploy.space.arch import ArchBatch, check_width_mult, largest_arch, save_arch_file


@dataclass
class DemoOptions:
    """What the demo runs: output folder, device profile, resolutions, samples, budgets (None: three automatic ones).
    ``accuracy_predictor`` None: FLOPs as the proxy; ``supernet`` None: random weights."""

    out: Path
    device: str = "host-cpu"
    resolutions: tuple[int, ...] = (160, 176, 192)
    width_mult: float = 1.0
    samples: int = 24
    budgets: tuple[float, ...] | None = None
    accuracy_predictor: str | None = None
    supernet: str | None = None
    threads: int | None = None
    generations: int = 300
    seed: int = 0
    progress: bool = True  # bars on a terminal (-q: none)


@dataclass
class DemoResult:
    """What the demo did: seconds per step, the facts the report quotes, and one entry per compiled bundle."""

    options: DemoOptions
    steps: list[tuple[str, float]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    bundles: list[dict[str, Any]] = field(default_factory=list)


log = logging.getLogger(__name__)


def _say(message: str) -> None:
    log.info(message)


def auto_budgets(table, resolutions) -> tuple[float, ...]:
    """Three budgets spread between the fastest reachable sub-network and the largest one."""
    fastest, _ = latency_constraint(table, 1.0).minimum(resolutions)
    largest = float(table.predict_batch(ArchBatch.from_archs([largest_arch(max(resolutions))]))[0])
    return tuple(round(fastest + f * (largest - fastest), 2) for f in (0.25, 0.5, 0.8))


def run_demo(opts: DemoOptions) -> DemoResult:
    """The whole pipeline; every backend it opens is closed on return, error or Ctrl-C."""
    with ExitStack() as stack:
        return _run_demo(opts, stack)


def _run_demo(opts: DemoOptions, stack: ExitStack) -> DemoResult:
    result = DemoResult(opts)
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    device = load_profile(opts.device)
    backend = stack.enter_context(device.create_backend(threads=opts.threads))
    w = check_width_mult(opts.width_mult)
    res = tuple(sorted(opts.resolutions))
    objective = choose_objective(opts.accuracy_predictor, w, res)  # a wrong predictor stops here, before any work
    meta = profile_metadata(backend, device.name)
    result.facts.update(
        machine=describe_host(),
        backend=backend.name,
        runtime=f"{meta.runtime} {meta.runtime_version}",
        threads=backend.timing.threads,
        device=device.name,
        width_mult=w,
        toolkit=__version__,
    )

    # 1. latency table (cached: a complete table is reused, a partial one resumed)
    started = time.time()
    lut_path = out / f"{device.name}-w{w}.lut.json"
    plan = ProfilePlan.for_space(w, opts.resolutions)
    existing = len(load_lut(lut_path)) if lut_path.exists() else 0
    _say(
        f"[1/5] latency table: {len(plan.ops)} operators at r={list(opts.resolutions)} on {backend.name} "
        f"({'reusing ' + str(lut_path) if existing else 'profiling'})"
    )
    bars = opts.progress and sys.stderr.isatty()
    table = profile(backend, plan, lut_path, meta, resume=lut_path.exists(), progress=bars)
    result.facts.update(lut=str(lut_path), lut_keys=len(plan.ops), lut_reused=existing > 0, drift=drift_ratio(table))
    result.steps.append(("profile", time.time() - started))

    # 2. validate + calibrate
    started = time.time()
    _say(f"[2/5] validating the table on {opts.samples} sub-networks measured end to end")
    e2e = stack.enter_context(device.create_backend(threads=backend.timing.threads, instances=2))
    validation = validate(table, e2e, opts.samples, seed=opts.seed, progress=bars)
    paths = write_outputs(validation, out / "validation")
    table.calibration = validation.calibration
    with output_lock(lut_path):  # the lock every LUT writer takes
        table.save(lut_path)
    result.facts.update(validation=validation.report.to_dict(), scatter=str(paths["plot"].relative_to(out)))
    result.steps.append(("validate", time.time() - started))

    # 3. search
    started = time.time()
    budgets = opts.budgets or auto_budgets(table, res)
    _say(f"[3/5] searching ({objective.name}) at budgets {list(budgets)} ms and for the Pareto front")
    pareto = dataclasses.replace(PARETO_SEARCH, seed=opts.seed)
    front = pareto_search(objective, latency_constraint(table, max(budgets) * 1.25), [], res, pareto)
    winners = []
    for budget in budgets:
        config = SearchConfig(generations=opts.generations, seed=opts.seed)
        found = evolutionary_search(objective, [latency_constraint(table, budget)], res, config)
        arch_path = out / "search" / f"arch-{budget:g}ms.json"
        save_arch_file(
            arch_path,
            found.arch,
            width_mult=w,
            accuracy=found.score if objective.is_accuracy else None,
            latency_ms={table.name: table.predict(found.arch)},
            objective=objective.name,
        )
        winners.append((budget, found))
    chosen = [Chosen(f"{b:g} ms", table.predict(found.arch), found.score) for b, found in winners]
    write_pareto(front, out / "search", table.name, budgets, chosen)
    result.facts.update(
        objective=objective.name,
        proxy=not objective.is_accuracy,
        budgets=list(budgets),
        pareto=str((out / "search" / "pareto.png").relative_to(out)),
        front_size=len(front.archs),
        front_seconds=front.seconds,
    )
    result.steps.append(("search", time.time() - started))

    # 4 + 5. compile and benchmark every winner
    started = time.time()
    _say(
        f"[4/5] compiling {len(winners)} bundles for {backend.name}"
        + ("" if opts.supernet else " (random weights: no --supernet given)")
    )
    compiled = []
    for budget, found in winners:
        directory = out / "bundles" / f"{budget:g}ms"
        compiled.append(
            (budget, found, compile_bundle(found.arch, backend, directory, w, opts.supernet, table=table, force=True))
        )
    result.steps.append(("compile", time.time() - started))
    started = time.time()
    _say("[5/5] benchmarking the bundles")
    for budget, found, bundle in compiled:
        measurement, _ = benchmark_bundle(bundle.directory, e2e, trust_native_code=True)  # compiled just above
        result.bundles.append(
            {
                "budget_ms": budget,
                "arch": str(found.arch),
                "score": found.score,
                "flops_m": bundle.manifest["flops_m"],
                "params_m": bundle.manifest["params"] / 1e6,
                "predicted_ms": measurement["predicted_ms"],
                "measured_ms": measurement["measured_ms"],
                "median_ms": (measurement["latency_ms"] or {}).get("median"),
                "error_percent": measurement["error_percent"],
                "max_abs_diff": bundle.manifest["verification"]["max_abs_diff"],
                "path": str(bundle.directory.relative_to(out)),
                "weights": bundle.manifest["weights"],
            }
        )
    result.steps.append(("benchmark", time.time() - started))
    errors = np.abs([b["error_percent"] for b in result.bundles])
    result.facts["bundle_error_max"] = float(errors.max()) if errors.size else None
    return result
