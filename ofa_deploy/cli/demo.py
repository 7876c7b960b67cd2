"""``ofa-deploy demo``: the whole pipeline on the host CPU, with a report."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ofa_deploy.cli.common import (
    BUDGETS,
    GENERATIONS,
    SAMPLES,
    THREADS,
    WIDTH_MULT,
    add_bounded,
    checked,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy demo`` and its flags."""
    p = subparsers.add_parser("demo", help="profile, validate, search, compile and benchmark on this machine")
    p.add_argument("--out", default="demo-output", help="output folder (default ./demo-output)")
    p.add_argument("--device", default="host-cpu", help="device profile (default host-cpu: ONNX Runtime)")
    p.add_argument("--resolutions", default="160,176,192", help="resolutions to profile and search")
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default 1.0)", default=1.0)
    add_bounded(p, "--samples", SAMPLES, "sub-networks for validation (default 24)", default=24)
    add_bounded(p, "--budgets", BUDGETS, "latency budgets in ms (default: three, spread over the range)")
    p.add_argument("--accuracy-predictor", help="accuracy predictor (else FLOPs is maximised as a proxy)")
    p.add_argument("--supernet", help="supernet checkpoint for the bundles' weights (else random weights)")
    add_bounded(p, "--threads", THREADS, "inference threads (default: the profile's)")
    add_bounded(p, "--generations", GENERATIONS, "search generations (default 300)", default=300)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Run the whole pipeline into ``--out`` (caches kept inside it); print the bundles and where the report is."""
    from ofa_deploy.cli.common import parse_resolutions
    from ofa_deploy.cli.output import format_table, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.reports.demo import DemoOptions, run_demo
    from ofa_deploy.reports.markdown import write_report

    budgets = tuple(args.budgets) if args.budgets else None
    # inputs read late in the pipeline are checked now, before minutes of profiling and validation
    if args.accuracy_predictor:
        from ofa_deploy.search.predictors import load_accuracy_predictor

        load_accuracy_predictor(args.accuracy_predictor)
    if args.supernet and not Path(args.supernet).is_file():
        raise BadInputError(f"{args.supernet}: no such supernet checkpoint (--supernet)")
    opts = DemoOptions(
        out=Path(args.out),
        device=args.device,
        resolutions=parse_resolutions(args.resolutions),
        width_mult=args.width_mult,
        samples=args.samples,
        budgets=budgets,
        accuracy_predictor=args.accuracy_predictor,
        supernet=args.supernet,
        threads=args.threads,
        generations=args.generations,
        progress=not args.quiet,
    )
    started = time.time()
    with _caches_inside(opts.out / ".cache"):
        result = run_demo(opts)
        report = write_report(result)
    if args.json:
        print_json(
            {"report": str(report), "facts": result.facts, "bundles": result.bundles, "seconds": time.time() - started}
        )
        return 0
    rows = [
        [
            f"{b['budget_ms']:g}",
            f"{b['predicted_ms']:.3f}",
            f"{b['measured_ms']:.3f}",
            f"{b['error_percent']:+.1f}%",
            b["path"],
        ]
        for b in result.bundles
    ]
    print(format_table(["budget ms", "predicted ms", "measured ms", "error", "bundle"], rows))
    after = result.facts["validation"]["after"]
    print(
        f"\nvalidation (held out, calibrated): ±5% {after['acc5']:.0%}, ±10% {after['acc10']:.0%}, "
        f"tau {after['kendall_tau']:.2f}"
    )
    print(f"report: {report}  ({time.time() - started:.0f} s in all)")
    return 0


@contextmanager
def _caches_inside(cache: Path) -> Iterator[None]:
    """Keep every file the demo causes inside its output folder while it runs: ONNX Runtime writes a
    device id under $XDG_CACHE_HOME (else ~/.cache) when first imported, matplotlib caches fonts under
    ~ too. The variables are put back afterwards (a caller running ``main`` in-process keeps its own
    caches: the zig linker's glibc build, ~1.5 minutes, lives under $XDG_CACHE_HOME as well)."""
    names = {"XDG_CACHE_HOME": cache.resolve(), "MPLCONFIGDIR": cache.resolve() / "matplotlib"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(path) for name, path in names.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
