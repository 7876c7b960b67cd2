"""``ofa-deploy predict``: latency of an arch from a LUT, with the per-operator breakdown."""

from __future__ import annotations

import argparse

from ofa_deploy.cli.common import WIDTH_MULT, add_bounded, checked

CHUNK = 8192  # archs predicted per call of --archs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy predict`` and its flags."""
    p = subparsers.add_parser("predict", help="predict the latency of an arch from a LUT")
    p.add_argument("--lut", required=True, help="toolkit LUT file, official YAML file, or a directory of them")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="Arch JSON file")
    which.add_argument("--archs", help="JSON Lines file, one Arch per line: predicts them all (in order)")
    add_bounded(p, "--width-mult", WIDTH_MULT, "override the width multiplier inferred from the LUT")
    p.add_argument("--uncalibrated", action="store_true", help="ignore the LUT's calibration")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Predict the latency of ``--arch`` from the LUT with its per-operator breakdown (``--archs``: every line)."""
    from ofa_deploy.cli.output import format_table, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.latency.table import load_lut
    from ofa_deploy.space.arch import load_arch_file, width_mult_from

    table = load_lut(args.lut, args.width_mult)
    if args.archs:
        return _run_batch(args, table)
    arch, data = load_arch_file(args.arch)
    if "width_mult" in data and args.width_mult is None and width_mult_from(data, None, args.arch) != table.width_mult:
        raise BadInputError(
            f"{args.arch} is for width multiplier {data['width_mult']} but {args.lut} is for {table.width_mult}"
        )
    breakdown = table.predict_breakdown(arch)
    calibrated = table.calibration is not None and not args.uncalibrated
    latency = table.predict(arch, calibrated=calibrated)
    intervals = table.calibration.intervals if calibrated and table.calibration is not None else None
    if args.json:
        document = {"latency_ms": latency, "breakdown": breakdown, "calibrated": calibrated}
        if intervals is not None:
            document["interval"] = {
                "level": intervals.level,
                "low_ms": latency * intervals.low,
                "high_ms": latency * intervals.high,
                "upper_ms": {q: latency * f for q, f in intervals.upper.items()},  # run quantile -> bound
            }
        print_json(document)
        return 0
    rows = [(key, f"{ms:.4f}") for key, ms in breakdown.items()]
    if table.call_overhead_ms:
        rows.append(("(runtime call overhead, once)", f"{table.call_overhead_ms:.4f}"))
    print(format_table(["operator", "ms"], rows))
    note = ""
    if calibrated:
        c = table.calibration
        note = f" (calibrated: {c.slope:.4f} x sum {c.intercept:+.4f} ms)"
    shown = f"{latency:.3f} ms"
    if intervals is not None:
        shown += f" ({intervals.level:.0%}: {latency * intervals.low:.3f}-{latency * intervals.high:.3f})"
    print(f"\npredicted latency: {shown}{note}  [{table.name}, {table.precision}, r{arch.r}, w{table.width_mult}]")
    if intervals is not None:
        tails = ", ".join(f"p{float(q) * 100:g} <= {latency * f:.3f} ms" for q, f in intervals.upper.items())
        print(f"run-to-run tail ({intervals.level:.0%} bounds): {tails}")
    return 0


def _run_batch(args: argparse.Namespace, table) -> int:
    """``--archs A.jsonl``: one vectorised prediction for every line; ``--json`` prints a list in line order."""
    from ofa_deploy.cli.output import format_table, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.latency.measurements import read_archs

    batch, lines_width = read_archs(args.archs)  # streamed into arrays
    if lines_width is not None and args.width_mult is None and lines_width != table.width_mult:
        raise BadInputError(
            f"{args.archs} is for width multiplier {lines_width} but {args.lut} is for {table.width_mult}"
        )
    calibrated = table.calibration is not None and not args.uncalibrated
    latencies = [  # in chunks: the gathers' memory stays bounded however long the file
        ms
        for start in range(0, len(batch), CHUNK)
        for ms in table.predict_batch(batch[start : start + CHUNK], calibrated=calibrated).tolist()
    ]
    if args.json:
        print_json([{"latency_ms": ms, "r": r, "calibrated": calibrated} for r, ms in zip(batch.r.tolist(), latencies)])
        return 0
    rows = [(i + 1, a.r, f"{ms:.3f}", str(a)) for i, (a, ms) in enumerate(zip(batch.to_archs(), latencies))]
    print(format_table(["line", "r", "ms", "arch"], rows))
    note = " (calibrated)" if calibrated else ""
    print(f"\n{len(batch)} sub-networks predicted{note} [{table.name}, {table.precision}, w{table.width_mult}]")
    return 0
