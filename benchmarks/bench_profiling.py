"""Profiling throughput per host backend, and the time for a full LUT at 1 and at 25 resolutions.

    python benchmarks/bench_profiling.py [--backends onnxruntime,openvino,tflite] [--all-resolutions onnxruntime]

Targets (issue 3): a full single-resolution LUT in under 60 s; all 25 resolutions in under 10 minutes.
The LUTs are kept in benchmarks/out/ for bench_validate.py.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import HOST_BACKENDS, OUT, machine, print_table

from ofa_deploy.backend.profiles import default_profile_for
from ofa_deploy.latency.profiling import ProfilePlan, drift_ratio, profile, profile_metadata
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.arch import RESOLUTIONS

VALIDATION_RESOLUTIONS = (160, 176, 192, 208, 224)


def run_profile(backend_name: str, resolutions, out) -> tuple[int, float, float]:
    device = default_profile_for(backend_name)
    backend = device.create_backend()
    plan = ProfilePlan.for_space(device.width_mult, resolutions)
    if out.exists():
        out.unlink()
    meta = profile_metadata(backend, device.name)
    start = time.perf_counter()
    table = profile(backend, plan, out, meta, progress=False)
    return len(plan.ops), time.perf_counter() - start, drift_ratio(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(HOST_BACKENDS))
    parser.add_argument(
        "--all-resolutions", default="onnxruntime", help="backends to also profile at all 25 resolutions ('' for none)"
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    rows = []
    for name in [b for b in args.backends.split(",") if b]:
        keys, seconds, drift = run_profile(name, (160,), OUT / f"{name}-r160.json")
        rows.append([name, "160", keys, f"{seconds:.1f}", f"{keys / seconds:.1f}", f"{100 * (drift - 1):.0f}%"])
        print(f"{name} r160: {keys} keys in {seconds:.1f} s", file=sys.stderr)
        keys, seconds, drift = run_profile(name, VALIDATION_RESOLUTIONS, OUT / f"{name}-5res.json")
        rows.append(
            [name, "160..224 /16", keys, f"{seconds:.1f}", f"{keys / seconds:.1f}", f"{100 * (drift - 1):.0f}%"]
        )
        print(f"{name} 5 resolutions: {keys} keys in {seconds:.1f} s", file=sys.stderr)
        if name in args.all_resolutions.split(","):
            keys, seconds, drift = run_profile(name, RESOLUTIONS, OUT / f"{name}-all.json")
            assert len(load_lut(OUT / f"{name}-all.json").resolutions) == 25
            rows.append([name, "all 25", keys, f"{seconds:.1f}", f"{keys / seconds:.1f}", f"{100 * (drift - 1):.0f}%"])
            print(f"{name} all: {keys} keys in {seconds:.1f} s", file=sys.stderr)
    print(f"\nProfiling throughput ({machine()}; 1 thread, 10 rounds x 10 runs per key + reference)")
    print_table(["backend", "resolutions", "keys", "seconds", "keys/s", "drift"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
