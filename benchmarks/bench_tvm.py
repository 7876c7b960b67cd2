"""The tvm backend over a real TVM RPC tracker on 127.0.0.1: per-key build and time cost, the r=160
profile with one and with two servers under one key, and validate (measured vs predicted).

    python benchmarks/bench_tvm.py [--servers 1,2] [--resolutions 160] [--samples 20] [--skip-validate]

Everything goes through the CLI (``ofa-deploy profile/validate --backend tvm --device tvm-llvm-host
--rpc-tracker ... --rpc-key ...``) against TVM's own ``rpc_tracker`` and ``rpc_server`` processes.
Not a Jetson: the servers run on this machine (llvm target), so two servers on a shared 2-core
machine compete for the same cores; on real boards each server is its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, machine, print_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tvm_rpc_cluster import rpc_cluster  # noqa: E402


def cli(*args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ofa_deploy", *args, "--json", "--no-progress"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ofa-deploy {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return elapsed, json.loads(done.stdout)


def per_key_cost(keys: int) -> tuple[float, float]:
    """Seconds per key to build (ONNX -> linked .so, one worker) and to time (tvm-llvm-host timing,
    reference included), measured separately on the first ``keys`` operators of r=160, in-process."""
    from ofa_deploy.backend.profiles import load_profile
    from ofa_deploy.graph.ir import build_graph
    from ofa_deploy.latency.profiling import reference_key
    from ofa_deploy.space.ops import resolution_ops

    ops = resolution_ops(160, 1.0)[:keys]
    with load_profile("tvm-llvm-host").create_backend() as backend:
        reference = backend.reference(reference_key(1.0))  # starts the worker and loads the reference
        started = time.perf_counter()
        libraries = [backend.build(build_graph([op]), op.key) for op in ops]
        build_s = (time.perf_counter() - started) / keys
        session = backend._sessions[0]
        started = time.perf_counter()
        for op, library in zip(ops, libraries):
            loaded = session.load("op", library, tuple(build_graph([op]).input_shape))
            backend._time(session, loaded, reference, backend.timing)
        time_s = (time.perf_counter() - started) / keys
    return build_s, time_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="1,2", help='server counts to profile with, comma-separated ("": none)')
    parser.add_argument("--resolutions", default="160")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--skip-validate", action="store_true")
    parser.add_argument("--cost-keys", type=int, default=12, help="operators for the per-key cost (0: skip)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ofa-tvm-bench-"))
    rows, results = [], {"machine": machine(), "runs": []}
    if args.cost_keys:
        build_s, time_s = per_key_cost(args.cost_keys)
        results["per_key"] = {"keys": args.cost_keys, "build_s": build_s, "time_s": time_s}
        print(f"per key (first {args.cost_keys} keys of r=160): build {build_s:.2f} s, time {time_s:.2f} s")
    for count in [int(c) for c in args.servers.split(",") if c.strip()]:
        with rpc_cluster(work, servers=count, key=f"bench{count}") as cluster:
            lut = work / f"lut-{count}.json"
            connection = ["--rpc-tracker", cluster.tracker_address, "--rpc-key", cluster.key, "--rpc-timeout", "120"]
            target = ["--backend", "tvm", "--device", "tvm-llvm-host", *connection]
            seconds, summary = cli("profile", *target, "--resolutions", args.resolutions, "--out", str(lut))
            keys = summary["keys"]
            run = {"servers": count, "profile_s": seconds, "keys": keys, "summary": summary}
            row = [count, args.resolutions, keys, f"{seconds:.0f}", f"{seconds / max(keys, 1):.2f}"]
            if not args.skip_validate:
                cluster.wait_free(count)
                v_seconds, report = cli(
                    "validate",
                    "--lut",
                    str(lut),
                    *target,
                    "--samples",
                    str(args.samples),
                    "--out",
                    str(work / f"validate-{count}"),
                )
                run.update(validate_s=v_seconds, validate=report)
                after = report["after"]
                row += [f"{v_seconds:.0f}", f"{100 * after['acc10']:.0f}%", f"{100 * after['mape']:.1f}%"]
            rows.append(row)
            results["runs"].append(run)
    headers = ["servers", "resolutions", "keys", "profile s", "s/key"]
    if not args.skip_validate:
        headers += ["validate s", "within ±10% (calibrated)", "MAPE (calibrated)"]
    load = os.getloadavg()[0]
    print(f"machine: {results['machine']}, load average {load:.1f} at the end (other work inflates every figure)")
    print_table(headers, rows)
    (OUT / "bench_tvm.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"details: {OUT / 'bench_tvm.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
