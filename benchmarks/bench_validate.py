"""Measured vs predicted latency per host backend, before and after calibration.

    python benchmarks/bench_validate.py [--samples 100] [--backends onnxruntime,openvino,tflite]

Uses the 5-resolution LUTs written by bench_profiling.py (profiles them first if missing).
Targets (issue 3): after calibration >= 95% of sub-networks within ±10% and >= 80% within ±5%.
"""

from __future__ import annotations

import argparse
import sys

from bench_profiling import VALIDATION_RESOLUTIONS, run_profile
from common import HOST_BACKENDS, OUT, machine, print_table

from ofa_deploy.backend.profiles import default_profile_for
from ofa_deploy.latency.table import load_lut
from ofa_deploy.latency.validation import validate
from ofa_deploy.reports.validation import write_outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(HOST_BACKENDS))
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    rows = []
    for name in [b for b in args.backends.split(",") if b]:
        lut_path = OUT / f"{name}-5res.json"
        if not lut_path.exists():
            run_profile(name, VALIDATION_RESOLUTIONS, lut_path)
        table = load_lut(lut_path)
        backend = default_profile_for(name).create_backend(instances=3)
        result = validate(table, backend, args.samples, seed=args.seed, progress=False)
        write_outputs(result, OUT / f"validate-{name}")
        b, a = result.report.before, result.report.after
        rows.append(
            [
                name,
                result.report.held_out,
                f"{b['acc5']:.0%}",
                f"{b['acc10']:.0%}",
                f"{a['acc5']:.0%}",
                f"{a['acc10']:.0%}",
                f"{a['mape']:.1%}",
                f"{a['kendall_tau']:.3f}",
            ]
        )
        print(f"{name}: done ({OUT / f'validate-{name}'})", file=sys.stderr)
    print(
        f"\nMeasured vs predicted, {args.samples} sub-networks at r in {list(VALIDATION_RESOLUTIONS)} "
        f"(half fit the calibration, figures on the held-out half; {machine()})"
    )
    print_table(
        ["backend", "held out", "acc5 before", "acc10 before", "acc5 after", "acc10 after", "MAPE after", "tau after"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
