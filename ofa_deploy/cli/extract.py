"""``ofa-deploy extract``: cut a sub-network's weights out of a supernet checkpoint.

Writes the official ``net.config``, the static network's ``state_dict`` and the arch, so the
sub-network can be loaded without the supernet (and by the official OFA code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import WIDTH_MULT, add_bounded, checked


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy extract`` and its flags."""
    p = subparsers.add_parser("extract", help="extract a sub-network (net.config + weights) from a supernet")
    p.add_argument("--arch", required=True, help="Arch JSON file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--supernet", help="supernet checkpoint (official OFA layout or the toolkit's)")
    src.add_argument("--random-weights", action="store_true", help="no checkpoint: random weights (for latency work)")
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default: from the checkpoint)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Write ``--arch``'s ``net.config``, weights and arch file into ``--out`` (checkpoint or random weights)."""
    from ofa_deploy.cli.output import info, print_json
    from ofa_deploy.nn.extraction import extract_subnet
    from ofa_deploy.space.arch import load_arch_file, width_mult_from

    arch, data = load_arch_file(args.arch)
    width_mult = None
    if args.width_mult is not None or "width_mult" in data or args.random_weights:
        width_mult = width_mult_from(data, args.width_mult, args.arch)
    if args.random_weights:
        info("warning: no --supernet given: the sub-network has RANDOM weights (fine for latency, not accuracy)")
    result = extract_subnet(arch, Path(args.out), supernet_path=args.supernet, width_mult=width_mult)
    doc = {
        "arch": arch.to_dict(),
        "width_mult": result.width_mult,
        "weights": result.weights,
        "net_config": str(result.net_config_path),
        "state_dict": str(result.state_dict_path),
        "params": sum(p.numel() for p in result.net.parameters()),
    }
    if args.json:
        print_json(doc)
    else:
        print(f"wrote {result.net_config_path} and {result.state_dict_path} ({result.weights} weights)")
    return 0
