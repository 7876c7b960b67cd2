"""``ofa-deploy eval-subnets``: measure the top-1 of sampled sub-networks of a supernet (for ``train-predictor``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import CALIB_IMAGES, SAMPLES, SEED, add_bounded, checked


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy eval-subnets`` and its flags."""
    p = subparsers.add_parser(
        "eval-subnets",
        help="held-out top-1 of sampled sub-networks (plus the largest and smallest), BN re-calibrated",
    )
    p.add_argument("--supernet", required=True, help="supernet checkpoint (e.g. DIR/supernet.pth from `train`)")
    p.add_argument("--dataset", required=True, help="'digits' or 'imagefolder:PATH' (held-out split: PATH/val)")
    add_bounded(p, "--samples", SAMPLES, "random sub-networks besides the largest and smallest", required=True)
    p.add_argument("--out", required=True, help="JSON Lines to write: one Arch object plus 'accuracy' per line")
    p.add_argument("--resolutions", help="resolutions to sample (default: those the supernet was trained at)")
    add_bounded(p, "--calib-images", CALIB_IMAGES, "training images for BN re-calibration (default 500)", default=500)
    add_bounded(p, "--seed", SEED, "random seed (default 0)", default=0)
    p.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: each sub-network's accuracy after post-training quantization (QDQ, calibrated on "
        "training images; 'accuracy_fp32' beside it), for an int8 accuracy predictor",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the records as one JSON list")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Measure the held-out top-1 of the largest, smallest and sampled sub-networks; write them as JSON Lines."""

    import torch

    from ofa_deploy.cli.common import parse_resolutions
    from ofa_deploy.cli.output import info, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.files import atomic_write_text, ensure_parent, strict_json
    from ofa_deploy.nn.supernet import load_supernet
    from ofa_deploy.space.arch import RESOLUTIONS
    from ofa_deploy.train.checkpoint import read_supernet_info
    from ofa_deploy.train.datasets import open_dataset
    from ofa_deploy.train.subnet_eval import archs_to_evaluate, evaluate_archs

    out = Path(args.out)
    ensure_parent(out)
    trained = read_supernet_info(Path(args.supernet))
    if args.resolutions:
        resolutions = parse_resolutions(args.resolutions)
    else:
        resolutions = tuple(trained.get("resolutions") or RESOLUTIONS)
    data = open_dataset(args.dataset)
    supernet = load_supernet(args.supernet)
    n_classes = supernet.classifier.linear.out_features
    if n_classes != data.n_classes:
        raise BadInputError(
            f"{args.supernet}: the supernet has {n_classes} classes but --dataset {args.dataset} has {data.n_classes}"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    supernet.to(device)
    archs = archs_to_evaluate(args.samples, resolutions, args.seed)
    info(f"evaluating {len(archs)} sub-networks of {args.supernet} on {args.dataset} (held-out split)")
    records = evaluate_archs(
        supernet, archs, data, args.calib_images, device, progress=not args.no_progress, precision=args.precision
    )
    atomic_write_text(out, "".join(strict_json(r) + "\n" for r in records))
    if args.json:
        print_json(records)
        return 0
    accuracy = [r["accuracy"] for r in records]
    if args.precision == "int8":
        drop = sorted(r["accuracy_fp32"] - r["accuracy"] for r in records)
        median = drop[len(drop) // 2]
        print(f"int8 quantization lost {drop[0]:+.3f}..{drop[-1]:+.3f} of top-1 (median {median:+.3f})")
    print(
        f"wrote {out}: {len(records)} sub-networks, top-1 largest {accuracy[0]:.3f}, smallest {accuracy[1]:.3f}, "
        f"range {min(accuracy):.3f}..{max(accuracy):.3f} (use it with `train-predictor --data {out}`)"
    )
    return 0
