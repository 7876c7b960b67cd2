"""``ofa-deploy compile``: extract, export, verify and describe a sub-network for a backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import (
    CALIB_IMAGES,
    WIDTH_MULT,
    add_allow_target_mismatch,
    add_bounded,
    add_target_args,
    checked,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy compile`` and its flags."""
    p = subparsers.add_parser("compile", help="compile a sub-network into a deployment bundle")
    p.add_argument("--arch", required=True, help="Arch JSON file")
    add_target_args(p)
    p.add_argument(
        "--supernet", help="supernet checkpoint (official OFA layout or the toolkit's); without it, random weights"
    )
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default: from the checkpoint or the arch file)")
    p.add_argument("--calib-data", help="ImageFolder directory to re-calibrate BatchNorm statistics on")
    add_bounded(p, "--calib-images", CALIB_IMAGES, "images used for BN re-calibration (default 256)", default=256)
    p.add_argument(
        "--calibration-data",
        metavar="random|digits|imagefolder:PATH",
        help="with --precision int8: the inputs the network is quantized with and checked on (default random: "
        "right for latency, not for accuracy; the manifest says which)",
    )
    p.add_argument("--lut", help="latency table for the predicted latency recorded in the manifest")
    add_allow_target_mismatch(p, "a LUT or prediction")
    p.add_argument("--out", required=True, help="bundle directory to write (built beside it, put in place when done)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out as a whole")
    p.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the manifest with (writes manifest.sig)")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Compile ``--arch`` into a bundle at ``--out`` for the target; print what was written and how it verified."""
    from ofa_deploy.backend.quantization import CalibrationData
    from ofa_deploy.cli.common import make_backend, resolve_profile
    from ofa_deploy.cli.output import info, print_json
    from ofa_deploy.deploy.bundle import compile_bundle
    from ofa_deploy.latency.table import load_lut
    from ofa_deploy.space.arch import load_arch_file

    calibration = CalibrationData.parse(args.calibration_data) if args.calibration_data else None
    arch, data = load_arch_file(args.arch)
    width_mult = args.width_mult if args.width_mult is not None else data.get("width_mult")
    device = resolve_profile(args)
    table = load_lut(args.lut) if args.lut else None
    with make_backend(args, device) as backend:
        result = compile_bundle(
            arch,
            backend,
            Path(args.out),
            width_mult,
            args.supernet,
            args.calib_data,
            args.calib_images,
            table,
            force=args.force,
            sign_key=Path(args.sign_key) if args.sign_key else None,
            device=device.name if device is not None and args.device else None,  # named by the user, else unknown
            allow_target_mismatch=args.allow_target_mismatch,
            calibration=calibration,
        )
    m = result.manifest
    if args.supernet is None:  # after the work, so an error stays the only line on stderr
        info(
            "warning: no --supernet: the bundle got RANDOM weights (right for latency, useless for accuracy); "
            'the manifest says "weights": "random"'
        )
    if args.json:
        print_json(m)
        return 0
    v = m["verification"]
    print(
        f"wrote {args.out}: {', '.join(m['artifact']['files'])} + manifest.json "
        f"({m['backend']['runtime']} {m['backend']['runtime_version']})"
    )
    if v["passed"] is None:
        print(f"not verified against torch: {v['skipped']}")
    elif v.get("precision") == "int8":
        q = m["artifact"].get("details", {}).get("quantization", {})
        print(
            f"int8 checked against torch float32 on {v['inputs']} {q.get('calibration', {}).get('data', '')} "
            f"calibration inputs: top-1 agreement {v['top1_agreement']:.0%}, mean logit cosine "
            f"{v['mean_cosine']:.4f} OK"
        )
    else:
        print(
            f"verified against torch: max |diff| {v['max_abs_diff']:.2e} on logits up to "
            f"{v.get('logit_scale', 1.0):.3g} (relative tolerance {v['tolerance']:g}) "
            f"{'OK' if v['passed'] else 'FAILED'}"
        )
    if m["predicted_latency"]:
        print(f"predicted latency: {m['predicted_latency']['ms']:.3f} ms")
    return 0
