"""``ofa-deploy fit``: learn a LUT from end-to-end measurements of sampled sub-networks."""

from __future__ import annotations

import argparse

from ofa_deploy.backend.quantization import PRECISIONS
from ofa_deploy.cli.common import SEED, WIDTH_MULT, add_allow_target_mismatch, add_bounded, checked


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy fit`` and its flags."""
    p = subparsers.add_parser(
        "fit",
        help="learn a LUT (per-key latencies plus a bias) from end-to-end measurements",
        description=(
            "Fit a latency table to measured sub-networks (M.jsonl: one Arch per line plus 'latency_ms'), "
            "for a target that cannot be profiled op by op, or to refine a profiled table (--lut BASE). "
            "The result is an ordinary LUT that predict, search and validate accept; its metadata holds the "
            "fit's held-out (k-fold) error, the number of measurements and the method."
        ),
    )
    p.add_argument("--measurements", required=True, help="JSON Lines: an Arch object plus 'latency_ms' per line")
    p.add_argument("--out", required=True, help="LUT file to write")
    p.add_argument("--lut", help="a profiled LUT to refine (toolkit file, official YAML file or directory)")
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default: the base LUT's, the lines', else 1.0)")
    p.add_argument(
        "--resolutions",
        help="resolutions to write entries for, e.g. 160,176 or 'all' (default: the measured ones plus the base's)",
    )
    add_bounded(p, "--seed", SEED, "seed of the cross-validation split (default 0)", default=0)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="precision the measurements were taken at (default: their target record's, else the base LUT's)",
    )
    add_allow_target_mismatch(p, "measurements")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the fit summary as one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Fit a LUT to ``--measurements`` and write it to ``--out``, holding the lock every LUT writer takes."""
    from pathlib import Path

    from ofa_deploy.files import ensure_parent, output_lock

    out = Path(args.out)
    ensure_parent(out)  # an unusable --out fails before any fitting
    with output_lock(out):  # the lock every LUT writer takes: a profile or validate on --out refuses this run
        return _run(args, out)


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _run(args: argparse.Namespace, out) -> int:
    from ofa_deploy.cli.common import parse_resolutions
    from ofa_deploy.cli.output import format_table, info, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.latency.fit import fit_measurements, fitted_table
    from ofa_deploy.latency.measurements import measured_target, read_measurements
    from ofa_deploy.latency.table import load_lut

    requested = parse_resolutions(args.resolutions) if args.resolutions else None
    measurements, lines_width = read_measurements(args.measurements)
    target, mismatch = measured_target(measurements, args.measurements, args.allow_target_mismatch)
    if args.precision and target is not None and target.precision not in (None, args.precision):
        raise BadInputError(
            f"--precision {args.precision}: {args.measurements} was measured at {target.precision} (its target record)"
        )
    base = load_lut(args.lut, args.width_mult) if args.lut else None
    if args.width_mult is not None:
        width = args.width_mult
    elif base is not None:
        width = base.width_mult
        if lines_width is not None and lines_width != width:
            raise BadInputError(
                f"{args.measurements} is for width multiplier {lines_width} but {args.lut} is for {width}"
            )
    else:
        width = lines_width if lines_width is not None else 1.0
    info(f"fitting {len(measurements)} measurements" + (f" on top of {args.lut}" if base else " (no base table)"))
    result = fit_measurements(measurements, width, base=base, seed=args.seed, progress=not args.no_progress)
    resolutions = requested or sorted(set(result.measured_resolutions) | set(base.resolutions if base else ()))
    table = fitted_table(result, resolutions, width, base, args.seed, target, args.precision)
    if mismatch:
        table.metadata.fit["target_mismatch_allowed"] = mismatch
    table.save(out)
    summary = {"out": str(out), "width_mult": width, "resolutions": resolutions, **table.metadata.fit}
    summary["bias_ms"] = result.parameters.bias
    if args.json:
        print_json(summary)
        return 0
    held = result.held_out
    rows = [
        ("acc5 (within ±5%)", _cell(held["acc5"], "{:.1%}")),
        ("acc10 (within ±10%)", _cell(held["acc10"], "{:.1%}")),
        ("MAPE", _cell(held["mape"], "{:.1%}")),
        ("median |error|", _cell(held["median_abs_rel"], "{:.1%}")),
        ("Kendall tau", _cell(held["kendall_tau"], "{:.3f}")),
    ]
    networks = len(result.measured)
    merged = f" of {networks} distinct networks (repeats averaged)" if networks != len(measurements) else ""
    print(
        f"{len(measurements)} measurements{merged} at r in {result.measured_resolutions}; "
        f"held-out error ({summary['held_out']['folds']}-fold, each network predicted by a fit that did not see it):"
    )
    print(format_table(["metric", "held out"], rows))
    print(
        f"\nprior strength {result.strength} (chosen by cross-validation), bias {result.parameters.bias:.4f} ms; "
        f"wrote {out} ({len(resolutions)} resolution(s))"
    )
    return 0
