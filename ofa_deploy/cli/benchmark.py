"""``ofa-deploy benchmark``: run a bundle on its target and compare with the prediction (or any model file: --model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.backend.quantization import PRECISIONS
from ofa_deploy.cli.common import (
    INSTANCES,
    ROUNDS,
    THREADS,
    WARMUP,
    add_allow_target_mismatch,
    add_backend_flags,
    add_bounded,
    add_verify_key_flag,
    checked,
)
from ofa_deploy.cli.output import print_json
from ofa_deploy.errors import BadInputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy benchmark`` and its flags."""
    p = subparsers.add_parser(
        "benchmark",
        help="benchmark a compiled bundle and compare with its prediction, or any model file (--model)",
        description="Benchmark a bundle written by `compile` on its target and compare with its prediction; or "
        "time any model file (--model: .onnx, OpenVINO .xml, .tflite) with trtexec-style statistics and, with "
        "--op-profile, the runtime's own per-operator profile.",
    )
    p.add_argument("bundle", nargs="?", help="bundle directory written by `ofa-deploy compile`")
    p.add_argument(
        "--model",
        action="append",
        metavar="FILE",
        help="time this model file (.onnx, .xml, .tflite, or a bundle directory's artifact) instead of a bundle; "
        "several: compared on one target in the same interleaved runs",
    )
    p.add_argument(
        "--shape",
        action="append",
        metavar="NAME:DIMS",
        help="with --model: the shape of a dynamic input, e.g. input:1x3x224x224 (repeatable)",
    )
    add_bounded(p, "--warmup", WARMUP, "with --model: untimed runs first (default 10)", default=10)
    p.add_argument(
        "--op-profile",
        metavar="DIR",
        help="with --model: per-operator time from the runtime's profiler into DIR (operators.json, operators.png)",
    )
    p.add_argument("--backend", help="backend to run it on (default: the one it was compiled for)")
    p.add_argument("--device", help="device profile name or YAML path")
    p.add_argument(
        "--lut",
        help="latency table to predict with (default: the prediction in the manifest); with --model --op-profile: "
        "the table to set each operator's in-network time against",
    )
    add_allow_target_mismatch(p, "a LUT or prediction")
    add_bounded(p, "--threads", THREADS, "inference threads (default: as compiled)")
    add_bounded(p, "--rounds", ROUNDS, "timing rounds (default: as compiled)")
    add_bounded(p, "--runs", ROUNDS, "timed runs per round (default: as compiled; with --model: runs, default 100)")
    add_bounded(p, "--instances", INSTANCES, "model instances to alternate between (default 3)")
    add_verify_key_flag(p)
    p.add_argument(
        "--trust-native-code",
        action="store_true",
        help="run an unsigned bundle's native library in this process (a TVM library without a device); "
        "only for bundles you built or trust",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the precision the bundle must have been compiled for (a bundle runs its own; a model file is "
        "timed as it is)",
    )
    add_backend_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Benchmark a bundle on its target (or another), compare with its prediction, append the result to its manifest."""
    from ofa_deploy.backend.timing import TimingOptions
    from ofa_deploy.cli.common import make_backend, run_bundle_precision, target_for_record, warn_if_busy
    from ofa_deploy.cli.output import format_table, print_json
    from ofa_deploy.deploy.bundle import benchmark_bundle, open_bundle, require_trusted_code
    from ofa_deploy.latency.table import load_lut

    if args.model or args.shape or args.op_profile:
        return _model(args)
    if not args.bundle:
        raise BadInputError("give a bundle directory, or --model FILE to time a model file")
    directory = Path(args.bundle)
    manifest = open_bundle(directory, Path(args.verify_key) if args.verify_key else None)
    settings = manifest.document["backend"].get("settings")  # as compiled (measurement ones), unless flags say
    run_bundle_precision(args, settings, str(directory))
    device, recorded = target_for_record(args, manifest.backend_name, settings, str(directory))
    timing = manifest.timing
    base = TimingOptions(**{**timing.to_dict(), "instances": 3}) if timing else TimingOptions(instances=3)
    table = load_lut(args.lut) if args.lut else None
    with make_backend(args, device, base, recorded) as backend:
        manifest.artifact.check_kind(backend.name, backend.artifact_kinds, str(directory))
        require_trusted_code(directory, backend, manifest, args.trust_native_code)  # the only line if refused
        warn_if_busy(backend)
        # the device: the profile --device names, else the one the bundle was compiled for (its recorded settings)
        named = (
            device.name if device is not None and args.device else manifest.document["backend"].get("device_profile")
        )
        result, stats = benchmark_bundle(
            directory, backend, table, manifest, args.trust_native_code, named, args.allow_target_mismatch
        )
    if not result["measured"]:
        return _print_estimate(args, directory, backend, result)
    if args.json:
        print_json(result)
        return 0
    lat = result["latency_ms"]
    rows = [
        ["mean", f"{lat['mean']:.3f}"],
        ["median", f"{lat['median']:.3f}"],
        ["p90", f"{lat['p90']:.3f}"],
        ["p99", f"{lat['p99']:.3f}"],
        ["std", f"{lat['std']:.3f}"],
        ["count", lat["count"]],
        ["measured (robust)", f"{result['measured_ms']:.3f}"],
    ]
    if result["predicted_ms"] is not None:
        rows += [
            ["predicted", f"{result['predicted_ms']:.3f}"],
            ["measured / predicted", f"{result['ratio_measured_to_predicted']:.3f}"],
            ["prediction error", f"{result['error_percent']:+.1f}%"],
        ]
    print(
        f"{directory} on {backend.name} ({result['runtime']['runtime']} {result['runtime']['runtime_version']}, "
        f"{backend.timing.threads} thread(s))"
    )
    print(format_table(["latency (ms)", "value"], rows))
    if stats.per_batch():  # backends that run batches (nvidia): latency and throughput per batch size
        batches = [
            [b.batch_size, f"{b.latency_ms:.3f}", f"{b.per_image_ms:.4f}", f"{b.throughput_images_per_s:.0f}"]
            for b in stats.per_batch()
        ]
        print("\n" + format_table(["batch size", "latency (ms)", "per image (ms)", "images/s"], batches))
    note = (
        "robust figure = median of round minima, normalised by the LUT's reference operator"
        if result["normalised_by_reference"]
        else "robust figure = median of round minima"
    )
    print(f"\n{note}; appended to {directory / 'manifest.json'}")
    return 0


def _model(args: argparse.Namespace) -> int:
    """``--model FILE``: any model file, timed as trtexec and benchmark_app do (cli/benchmark_model.py)."""
    from ofa_deploy.cli.benchmark_model import DEFAULT_RUNS, run_model

    if not args.model:
        raise BadInputError("--shape and --op-profile go with --model FILE")
    if args.bundle:
        raise BadInputError(f"give a bundle directory ({args.bundle}) or --model, not both")
    if args.lut and not args.op_profile:
        raise BadInputError("--lut with --model sets the operator profile against the table: give --op-profile DIR")
    bundle_only = [f for f, v in (("--rounds", args.rounds), ("--instances", args.instances)) if v]
    if bundle_only or args.verify_key or args.trust_native_code or args.allow_target_mismatch:
        raise BadInputError(f"{(bundle_only or ['a bundle flag'])[0]} is for bundles, not --model")
    args.runs = args.runs or DEFAULT_RUNS
    return run_model(args)


def _print_estimate(args: argparse.Namespace, directory: Path, backend, result: dict) -> int:
    """An analytical backend's figure: an estimate, printed as one (no timing statistics exist)."""
    if args.json:
        print_json(result)
        return 0
    line = f"{directory} on {backend.name}: estimated {result['measured_ms']:.3f} ms by {result['estimated_by']}"
    if result["predicted_ms"] is not None:
        line += f" (LUT prediction {result['predicted_ms']:.3f} ms, {result['error_percent']:+.1f}%)"
    print(line)
    return 0
