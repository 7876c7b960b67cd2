"""``ofa-deploy info``: FLOPs, parameters, peak memory and a per-stage summary of an arch."""

from __future__ import annotations

import argparse

from ofa_deploy.cli.common import WIDTH_MULT, add_bounded, checked


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy info`` and its flags."""
    p = subparsers.add_parser("info", help="FLOPs, parameters and peak memory of an arch")
    p.add_argument("--arch", required=True, help="Arch JSON file ({ks, e, d, r})")
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default: the file's, else 1.0)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Print an arch's FLOPs, parameters, peak memory and per-stage summary."""
    from ofa_deploy.cli.output import format_table, print_json
    from ofa_deploy.space.analytics import arch_stats
    from ofa_deploy.space.arch import load_arch_file, width_mult_from

    arch, data = load_arch_file(args.arch)
    width_mult = width_mult_from(data, args.width_mult, args.arch)
    stats = arch_stats(arch, width_mult)
    if args.json:
        doc = {"arch": arch.to_dict(), "hash": arch.stable_hash(), **stats.to_dict()}
        doc.pop("layers")
        print_json(doc)
        return 0
    print(f"arch        {arch}")
    print(f"hash        {arch.stable_hash()}")
    print(f"width mult  {stats.width_mult}")
    print(f"resolution  {stats.resolution}")
    print(f"FLOPs       {stats.flops_m:.1f} M (multiply-accumulates)")
    print(f"params      {stats.params:,} ({stats.params / 1e6:.2f} M)")
    print(f"peak memory {stats.peak_memory_bytes / 2**20:.2f} MiB (float32 activations, batch 1)")
    print()
    rows = [
        (
            s.stage + 1,
            s.depth,
            " ".join(s.blocks),
            s.out_channels,
            f"{s.out_size}x{s.out_size}",
            f"{s.macs / 1e6:.1f}",
            f"{s.params:,}",
        )
        for s in stats.stages
    ]
    print(format_table(["stage", "depth", "blocks", "channels", "output", "MFLOPs", "params"], rows))
    return 0
