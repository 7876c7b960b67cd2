"""``ofa-deploy search``: the best sub-network under one or more devices' constraints."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ofa_deploy.cli.common import GENERATIONS, POPULATION, POSITIVE, SEED, WIDTH_MULT, add_bounded, checked


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy search`` and its flags."""
    p = subparsers.add_parser("search", help="search the best sub-network under latency and other constraints")
    p.add_argument("--lut", action="append", required=True, help="latency table; repeat for several devices")
    add_bounded(
        p, "--latency-ms", POSITIVE, "latency limit for the matching --lut (same order)", action="append", required=True
    )
    p.add_argument("--accuracy-predictor", help="official acc_predictor.pth or a toolkit .npz (else FLOPs proxy)")
    p.add_argument(
        "--quantile",
        type=float,
        choices=(0.5, 0.9, 0.99),
        help="keep the bound on this quantile of each network's run latencies (0.5, 0.9, 0.99) within the "
        "limits, not the typical figure: a deadline met 99 times in 100 (needs intervals from `validate`)",
    )
    add_bounded(p, "--flops-max", POSITIVE, "max MFLOPs (multiply-accumulates)")
    add_bounded(p, "--params-max", POSITIVE, "max parameters, in millions")
    add_bounded(p, "--memory-max", POSITIVE, "max peak activation memory, in MiB")
    add_bounded(p, "--width-mult", WIDTH_MULT, "override the width multiplier inferred from the LUTs")
    add_bounded(p, "--population", POPULATION, "population size (default 100)", default=100)
    add_bounded(p, "--generations", GENERATIONS, "generations to evolve (default 500)", default=500)
    add_bounded(p, "--seed", SEED, "random seed (default 0)", default=0)
    p.add_argument(
        "--pareto",
        action="store_true",
        help="NSGA-II: write pareto.csv and pareto.png (accuracy vs latency on the first LUT); "
        "the front needs a population of at least 100 and at most 300 generations (raised/capped, with a note)",
    )
    p.add_argument("--out", required=True, help="Arch JSON to write (with its predicted metrics)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def _unique_names(tables) -> list[str]:
    names: list[str] = []
    for t in tables:
        name = t.name
        while name in names:
            name = f"{name}#{len(names) + 1}"
        names.append(name)
    return names


def run(args: argparse.Namespace) -> int:
    """Search the best arch under every ``--lut``'s latency limit and the other limits; write it to ``--out``."""
    from ofa_deploy.cli.output import format_table, info, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.latency.table import load_lut
    from ofa_deploy.reports.pareto import Chosen, write_pareto
    from ofa_deploy.search.evolution import (
        SearchConfig,
        choose_objective,
        common_resolutions,
        evolutionary_search,
        latency_constraint,
        metric_constraint,
        pareto_search,
        tail_factor,
    )
    from ofa_deploy.space.analytics import arch_stats
    from ofa_deploy.space.arch import RESOLUTIONS, ArchBatch, check_width_mult, save_arch_file

    if len(args.lut) != len(args.latency_ms):
        raise BadInputError(f"give one --latency-ms per --lut ({len(args.lut)} --lut, {len(args.latency_ms)} limits)")
    tables = [load_lut(path, args.width_mult) for path in args.lut]
    widths = {t.width_mult for t in tables}
    if len(widths) > 1:
        raise BadInputError(f"the LUTs are for different width multipliers {sorted(widths)}; pass --width-mult")
    width_mult = check_width_mult(widths.pop())
    resolutions = common_resolutions(tables, RESOLUTIONS)
    for t in tables:  # every key of the searched resolutions (and of those an interrupted profile left out)
        t.check_complete(sorted(set(resolutions) | set(t.metadata.resolutions)))
    names = _unique_names(tables)
    latency = [latency_constraint(t, limit, n, args.quantile) for t, limit, n in zip(tables, args.latency_ms, names)]
    others = [
        metric_constraint(metric, limit, width_mult, resolutions)
        for metric, limit in (
            ("flops_m", args.flops_max),
            ("params_m", args.params_max),
            ("memory_mb", args.memory_max),
        )
        if limit is not None
    ]
    objective = choose_objective(args.accuracy_predictor, width_mult, resolutions)
    if objective.is_accuracy and {t.precision for t in tables} != {objective.precision}:
        info(
            f"note: the accuracy predictor learned {objective.precision} accuracies but the tables are "
            f"{', '.join(sorted({t.precision for t in tables}))}: quantization changes accuracy differently per "
            "network (train one with `eval-subnets --precision int8` and `train-predictor`)"
        )
    config = SearchConfig(args.population, args.generations, seed=args.seed, progress=not args.no_progress)
    out = Path(args.out)
    if args.pareto:
        pareto = config.for_pareto()
        if pareto != config:
            info(f"note: --pareto searches with population {pareto.population} and {pareto.generations} generations")
        front = pareto_search(objective, latency[0], latency[1:] + others, resolutions, pareto)
        best = int(np.argmax(front.scores))
        arch, score, seconds = front.archs[best], float(front.scores[best]), front.seconds
        chosen = Chosen(out.name, float(front.latency[best]), score)
        write_pareto(front, out.parent, names[0], [args.latency_ms[0]], [chosen])
    else:
        result = evolutionary_search(objective, latency + others, resolutions, config)
        arch, score, seconds = result.arch, result.score, result.seconds
    if not objective.is_accuracy:
        info("note: no --accuracy-predictor: maximised FLOPs as a PROXY for accuracy (accuracy is reported as null)")

    batch = ArchBatch.from_archs([arch])
    latency_ms = {n: float(t.predict_batch(batch)[0]) for n, t in zip(names, tables)}
    precision = {n: t.precision for n, t in zip(names, tables)}  # each table's own: what its target runs
    stats = arch_stats(arch, width_mult)
    accuracy = score if objective.is_accuracy else None
    out.parent.mkdir(parents=True, exist_ok=True)
    save_arch_file(
        out,
        arch,
        width_mult=width_mult,
        accuracy=accuracy,
        latency_ms=latency_ms,
        precision=precision,
        flops_m=stats.flops_m,
        params_m=stats.params / 1e6,
        memory_mb=stats.peak_memory_bytes / 2**20,
        objective=objective.name,
    )
    doc = {
        "arch": arch.to_dict(),
        "accuracy": accuracy,
        "latency_ms": latency_ms,
        "precision": precision,
        "flops_m": stats.flops_m,
        "seconds": seconds,
    }
    if args.quantile is not None:  # what the deadline was held to, and the margin left under it
        bounds = {n: latency_ms[n] * tail_factor(t, args.quantile) for n, t in zip(names, tables)}
        doc["quantile"] = {
            "quantile": args.quantile,
            "bound_ms": bounds,
            "margin_ms": {n: limit - bounds[n] for n, limit in zip(names, args.latency_ms)},
        }
    if args.json:
        print_json(doc)
        return 0
    rows = [(n, precision[n], f"{latency_ms[n]:.3f}", f"{limit:g}") for n, limit in zip(names, args.latency_ms)]
    headers = ["latency table", "precision", "predicted ms", "limit ms"]
    if args.quantile is not None:
        q = doc["quantile"]
        headers.insert(3, f"p{args.quantile * 100:g} bound ms")
        rows = [(n, p, predicted, f"{q['bound_ms'][n]:.3f}", limit) for n, p, predicted, limit in rows]
    print(format_table(headers, rows))
    acc_text = f"{accuracy:.2%} predicted top-1" if accuracy is not None else f"{stats.flops_m:.1f} MFLOPs (proxy)"
    print(
        f"\nbest: {arch}\n      {acc_text}, {stats.flops_m:.1f} MFLOPs, {stats.params / 1e6:.2f} M params, "
        f"w{width_mult}; searched in {seconds:.2f} s"
    )
    print(f"wrote {out}" + (f", {out.parent / 'pareto.csv'}, {out.parent / 'pareto.png'}" if args.pareto else ""))
    return 0
