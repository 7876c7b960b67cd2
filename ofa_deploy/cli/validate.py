"""``ofa-deploy validate``: measured vs predicted on sampled sub-networks, and calibration."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import (
    SAMPLES,
    SEED,
    WIDTH_MULT,
    add_allow_target_mismatch,
    add_bounded,
    add_cluster_flag,
    add_target_args,
    checked,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy validate`` and its flags."""
    p = subparsers.add_parser("validate", help="check a LUT against end-to-end measurements and calibrate it")
    p.add_argument("--lut", required=True, help="toolkit LUT file, official YAML file, or a directory of them")
    add_target_args(p)
    add_bounded(p, "--width-mult", WIDTH_MULT, "override the width multiplier inferred from the LUT")
    add_bounded(p, "--samples", SAMPLES, "number of sub-networks (default 20)", default=20)
    add_bounded(p, "--seed", SEED, "random seed (default 0)", default=0)
    p.add_argument("--out", required=True, help="directory for report.json, measurements.csv, scatter.png")
    p.add_argument("--no-save", action="store_true", help="do not store the calibration in the LUT")
    p.add_argument(
        "--save-measurements",
        metavar="M.jsonl",
        help="also write what was measured (Arch + latency_ms per line), the input of `ofa-deploy fit`",
    )
    add_allow_target_mismatch(p, "a LUT")
    add_cluster_flag(p, "measure the sub-networks")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Measure sampled sub-networks against the LUT's predictions and store the calibration (unless ``--no-save``)."""
    from contextlib import nullcontext

    from ofa_deploy.files import output_lock

    # the lock every LUT writer takes, before the LUT is read: a profile still writing it refuses this run
    saving_into_lut = not args.no_save and Path(args.lut).is_file()
    with output_lock(Path(args.lut)) if saving_into_lut else nullcontext():
        return _validate(args)


def _validate(args: argparse.Namespace) -> int:
    from ofa_deploy.cli.common import target_for_record, warn_if_busy
    from ofa_deploy.cli.output import format_table, info, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.files import output_lock
    from ofa_deploy.latency.measurements import write_measurements
    from ofa_deploy.latency.metadata import CONVERTED
    from ofa_deploy.latency.table import load_lut
    from ofa_deploy.latency.validation import measurements_of, validate
    from ofa_deploy.reports.validation import write_outputs

    table = load_lut(args.lut, args.width_mult)
    table.check_complete()  # an interrupted profile: name a missing key and --resume before measuring anything
    lut_backend = table.metadata.backend
    # validate with the (measurement) settings it was profiled with
    device, recorded = target_for_record(args, lut_backend, table.metadata.settings, str(args.lut))
    chosen = device.backend if device is not None else args.backend
    if lut_backend and lut_backend != chosen:
        raise BadInputError(f"{args.lut} was measured with backend '{lut_backend}', not '{chosen}'")
    from ofa_deploy.cli.fleet_args import fleet_backend  # one device, or several: --serial S1 --serial S2

    with fleet_backend(args, device, table.metadata.timing, recorded) as backend:
        warn_if_busy(backend)
        result = validate(
            table,
            backend,
            args.samples,
            seed=args.seed,
            progress=not args.no_progress,
            device=device.name if device is not None else None,
            allow_target_mismatch=args.allow_target_mismatch,
        )
    if args.save_measurements:  # first: the measurements are the expensive part
        write_measurements(args.save_measurements, measurements_of(result))
    paths = write_outputs(result, Path(args.out))
    if not args.no_save:
        table.calibration = result.calibration
        target = Path(args.lut)
        if table.metadata.is_official:
            target = Path(args.out) / "lut.json"
            table.metadata.format, table.metadata.converted_from = CONVERTED, str(args.lut)
            info(f"{args.lut} is an official table; the calibrated copy is {target}")
        with output_lock(target):  # --lut: already held by this run
            table.save(target)
    if args.json:
        print_json(result.report.to_dict())
        return 0
    rows = []
    for name in ("rmse_ms", "mape", "kendall_tau", "acc5", "acc10"):
        before, after = result.report.before[name], result.report.after[name]
        fmt = "{:.1%}" if name in ("mape", "acc5", "acc10") else "{:.3f}"
        rows.append((name, fmt.format(before), fmt.format(after)))
    print(
        f"{result.report.samples} sub-networks on {backend.name}; figures on the "
        f"{result.report.held_out} held out of the calibration fit:"
    )
    print(format_table(["metric", "LUT sum", "calibrated"], rows))
    c = result.calibration
    print(
        f"\ncalibration: measured ≈ {c.slope:.4f} x predicted {c.intercept:+.4f} ms"
        + ("" if args.no_save else " (saved into the LUT)")
    )
    if c.intervals is not None:
        i = c.intervals
        tails = ", ".join(f"p{float(q) * 100:g} <= x{f:.3f} ({i.coverage.get(q, 0):.0%})" for q, f in i.upper.items())
        print(
            f"{i.level:.0%} intervals (split conformal, {i.fitted_on} networks; held-out coverage in brackets): "
            f"robust latency in [x{i.low:.3f}, x{i.high:.3f}] of the calibrated prediction "
            f"({i.coverage.get('interval', 0):.0%}); {tails}"
        )
    saved = f", {args.save_measurements}" if args.save_measurements else ""
    print(f"wrote {paths['report']}, {paths['csv']}, {paths['plot']}{saved}")
    return 0
