"""``ofa-deploy train-predictor``: fit an accuracy predictor on [arch, accuracy] data."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import EPOCHS, LAYER_SIZES, SEED, SHARE, add_bounded, checked


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy train-predictor`` and its flags."""
    p = subparsers.add_parser("train-predictor", help="train an accuracy predictor from [arch, accuracy] data")
    p.add_argument("--data", required=True, help="CSV or JSONL: arch fields (ks, e, d, r) plus 'accuracy'")
    p.add_argument("--out", required=True, help="predictor file to write (.npz)")
    add_bounded(p, "--hidden", LAYER_SIZES, "hidden layer sizes (default 400,400,400)", default="400,400,400")
    add_bounded(p, "--epochs", EPOCHS, "training epochs (default 300)", default=300)
    add_bounded(p, "--held-out", SHARE, "share of records held out for the metrics (default 0.2)", default=0.2)
    add_bounded(p, "--seed", SEED, "random seed (default 0)", default=0)
    p.add_argument("--json", action="store_true", help="print the held-out metrics as JSON")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Train an accuracy predictor on ``--data``, save it as ``.npz`` and print its held-out RMSE and Kendall tau."""
    from ofa_deploy.cli.output import print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.search.predictors import load_dataset_with_precision, train_predictor

    hidden = tuple(args.hidden)  # parsed and range-checked with the other flags, before any work
    out = Path(args.out)
    if out.suffix != ".npz":
        raise BadInputError(f"--out: predictors are saved as .npz (plain arrays, no pickles), got '{out.name}'")
    archs, accuracy, precision = load_dataset_with_precision(args.data)
    predictor, metrics = train_predictor(
        archs, accuracy, hidden=hidden, epochs=args.epochs, held_out=args.held_out, seed=args.seed
    )
    predictor.meta["precision"] = precision
    out.parent.mkdir(parents=True, exist_ok=True)
    predictor.save(out)
    if args.json:
        print_json({"out": str(out), **metrics})
        return 0
    print(
        f"trained on {metrics['train_samples']} archs; on the {metrics['held_out_samples']} held out: "
        f"RMSE {metrics['rmse']:.4f} ({100 * metrics['rmse']:.2f} points of top-1), "
        f"Kendall tau {metrics['kendall_tau']:.3f}"
    )
    print(f"wrote {out} (use it with --accuracy-predictor)")
    return 0
