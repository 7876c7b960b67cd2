"""The adb backend against the loopback ADB device: profile one resolution, then measured vs
predicted on sampled sub-networks, to compare with the host `tflite` backend (same kernels).

    python benchmarks/bench_adb_loopback.py [--samples 40] [--rounds 10]

Not a phone: the loopback device (tests/adb_device) speaks the real ADB protocol to the real
adb-shell client and runs the pushed .tflite files with ai-edge-litert on this machine. What this
shows is that batching, transfer and parsing lose nothing; a phone's own figures need a phone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.backend.registry import create_backend
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.latency.profiling import ProfilePlan, profile, profile_metadata
from ofa_deploy.latency.validation import validate
from ofa_deploy.reports.validation import write_outputs
from tests.adb_device import FakeAdbDevice


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ofa-adb-bench-"))
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    phone = FakeAdbDevice(work / "phone").start()
    try:
        (work / "bin").mkdir()
        stub = phone.install_benchmark_stub(work / "bin")
        timing = TimingOptions(threads=1, warmup=3, rounds=args.rounds, runs=10)
        backend = create_backend("adb", timing, serial=phone.serial, benchmark_model=str(stub), batch_size=32)
        lut = OUT / "adb-loopback-r160.json"
        if lut.exists():
            lut.unlink()
        meta = profile_metadata(backend, "loopback")
        start = time.time()
        plan = ProfilePlan.for_space(1.0, (160,))
        table = profile(backend, plan, lut, meta, progress=False)
        profile_s = time.time() - start
        start = time.time()
        result = validate(table, backend, args.samples, progress=False)
        write_outputs(result, OUT / "validate-adb-loopback")
        validate_s = time.time() - start
    finally:
        phone.stop()
    b, a = result.report.before, result.report.after
    print(
        f"\nadb backend on the loopback ADB device ({machine()}): r=160, {len(plan.ops)} keys profiled in "
        f"{profile_s:.0f} s; {args.samples} sub-networks validated in {validate_s:.0f} s"
    )
    print_table(
        ["held out", "acc5 before", "acc10 before", "acc5 after", "acc10 after", "MAPE after", "tau after"],
        [
            [
                result.report.held_out,
                f"{b['acc5']:.0%}",
                f"{b['acc10']:.0%}",
                f"{a['acc5']:.0%}",
                f"{a['acc10']:.0%}",
                f"{a['mape']:.1%}",
                f"{a['kendall_tau']:.3f}",
            ]
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
