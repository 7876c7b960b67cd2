"""Profile and validate the nvidia backend on this machine's GPU: r=224, batch 64, fp32 and fp16.

    python benchmarks/bench_nvidia.py [--device a100] [--engine tensorrt] [--samples 40] [--precisions fp32,fp16]

For each precision: profile every operator at r=224 (the OFA GPU setting: one call on a batch of
64 images), then time ``--samples`` sub-networks end to end and compare with the table (before
and after calibration; target after calibration: acc10 >= 95%). Prints one table; the LUTs and
validation reports go to benchmarks/out/. Without an NVIDIA GPU it exits 3 with one line.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import OUT, print_table

from ofa_deploy.backend.profiles import load_profile
from ofa_deploy.backends.nvidia.gpu import list_gpus
from ofa_deploy.errors import OFADeployError
from ofa_deploy.latency.profiling import ProfilePlan, drift_ratio, profile, profile_metadata
from ofa_deploy.latency.validation import validate
from ofa_deploy.reports.validation import write_outputs

RESOLUTION = 224


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="a100", help="nvidia device profile for timing and defaults")
    parser.add_argument("--engine", default=None, help="tensorrt, ort-tensorrt, ort-cuda, torch (default: profile's)")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        gpus = list_gpus()
    except OFADeployError as exc:
        print(f"bench_nvidia: {exc}", file=sys.stderr)
        return 3
    OUT.mkdir(exist_ok=True)
    device = load_profile(args.device)
    rows = []
    for precision in [p for p in args.precisions.split(",") if p]:
        overrides = {"precision": precision, "batch_size": args.batch_size}
        if args.engine:
            overrides["engine"] = args.engine
        try:
            backend = device.create_backend(overrides, source="bench_nvidia")
            metadata = profile_metadata(backend, device.name)
        except OFADeployError as exc:
            print(f"bench_nvidia: {exc}", file=sys.stderr)
            return exc.exit_code
        lut = OUT / f"nvidia-{precision}-b{args.batch_size}-r{RESOLUTION}.json"
        lut.unlink(missing_ok=True)
        plan = ProfilePlan.for_space(device.width_mult, [RESOLUTION])
        start = time.perf_counter()
        table = profile(backend, plan, lut, metadata, progress=True)
        seconds = time.perf_counter() - start
        result = validate(table, backend, args.samples, seed=args.seed, progress=True)
        write_outputs(result, OUT / f"validate-nvidia-{precision}")
        before, after = result.report.before, result.report.after
        clocks = (table.metadata.conditions or {}).get("after", {}).get("clock_change")
        rows.append(
            [
                precision,
                backend.engine,
                len(plan.ops),
                f"{seconds:.0f}",
                f"{100 * (drift_ratio(table) - 1):.1f}%",
                "n/a" if clocks is None else f"{100 * clocks:.1f}%",
                f"{before['acc10']:.0%}",
                f"{after['acc5']:.0%}",
                f"{after['acc10']:.0%}",
                f"{after['mape']:.1%}",
            ]
        )
        print(f"{precision}: {lut}, {OUT / f'validate-nvidia-{precision}'}", file=sys.stderr)
    gpu = gpus[backend.settings.device_index]
    print(
        f"\n{gpu.name} (sm_{gpu.compute_capability.replace('.', '')}), r={RESOLUTION}, batch {args.batch_size}, "
        f"{args.samples} sub-networks validated (half fit the calibration, figures on the other half)"
    )
    print_table(
        [
            "precision",
            "engine",
            "keys",
            "profile s",
            "ref drift",
            "clock change",
            "acc10 before",
            "acc5 after",
            "acc10 after",
            "MAPE after",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
