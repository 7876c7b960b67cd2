"""Repeatability of end-to-end timings: the same sub-networks measured twice, sequential vs interleaved.

    python benchmarks/bench_repeatability.py                     # host backends, 40 sub-networks each
    python benchmarks/bench_repeatability.py --backends openvino --networks 100

A prediction cannot be checked to ±5% if measuring the same network twice disagrees by more. This
measures N sampled sub-networks (r 160..224) twice with each protocol, in the order
sequential, interleaved, sequential, interleaved (so both see the same minutes of the machine), and
reports the share of networks whose two measurements agree within ±2/5/10%, after the factor common
to all networks of a pass (the machine's speed in those minutes, which a calibration fitted on
measurements of the same pass absorbs; reported beside):

* sequential: one network at a time, all its rounds, each round followed by the reference operator
  (the protocol before issue 15);
* interleaved: up to ``--interleave`` networks loaded together, each round one pass over all of
  them, normalised by the pass's median reference (``ofa_deploy.backend.timing.time_interleaved``).

Both time the same number of runs per network. Writes benchmarks/out/repeatability.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_fidelity import RESOLUTIONS
from common import HOST_BACKENDS, OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.backend.profiles import default_profile_for
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.latency.profiling import reference_key
from ofa_deploy.space.arch import sample_batch
from ofa_deploy.space.ops import arch_ops

PROTOCOLS = ("sequential", "interleaved")


def agreement_between(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """How far two measurements of the same networks are apart, after the factor common to all of them
    (the machine's speed during each pass, which a calibration fitted in the same pass absorbs)."""
    ratio = second / first
    common = float(np.median(ratio))
    diff = np.abs(ratio / common - 1)
    return {
        "common_factor": common,
        "first": first.tolist(),
        "second": second.tolist(),
        "within2": float(np.mean(diff <= 0.02)),
        "within5": float(np.mean(diff <= 0.05)),
        "within10": float(np.mean(diff <= 0.10)),
        "median_diff": float(np.median(diff)),
        "max_diff": float(diff.max()),
    }


def one_backend(name: str, args: argparse.Namespace) -> dict:
    device = default_profile_for(name)
    archs = sample_batch(np.random.default_rng(args.seed), args.networks, resolutions=RESOLUTIONS).to_archs()
    graphs = [build_graph(arch_ops(a, device.width_mult)) for a in archs]
    passes: dict[str, list[np.ndarray]] = {p: [] for p in PROTOCOLS}
    started = time.time()
    interleave = {"sequential": 1, "interleaved": args.interleave}
    backends = {p: device.create_backend(rounds=args.rounds, interleave=interleave[p]) for p in PROTOCOLS}
    reference = backends["interleaved"].reference(reference_key(device.width_mult))
    for repeat in range(2):
        for protocol in PROTOCOLS:
            stats = backends[protocol].measure_networks(graphs, reference)
            passes[protocol].append(np.array([s.estimate for s in stats]))
            print(f"{name}: {protocol} pass {repeat + 1} done ({time.time() - started:.0f} s)", file=sys.stderr)
    for backend in backends.values():
        backend.close()
    return {
        "backend": name,
        "networks": len(graphs),
        "interleave": min(args.interleave, len(graphs)),
        "seconds": round(time.time() - started, 1),
        **{p: agreement_between(*passes[p]) for p in PROTOCOLS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(HOST_BACKENDS))
    parser.add_argument("--networks", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, help="timing rounds per network (default: the device profile's)")
    parser.add_argument("--interleave", type=int, default=128, help="networks timed together (default 128)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    rows = [one_backend(name, args) for name in args.backends.split(",") if name]
    report = {"machine": machine(), "args": vars(args), "rows": rows}
    (OUT / "repeatability.json").write_text(json.dumps(report, indent=1))
    print(f"\nThe same {args.networks} sub-networks measured twice per protocol ({machine()})")
    print_table(
        [
            "backend",
            "protocol",
            "common factor",
            "within ±2%",
            "within ±5%",
            "within ±10%",
            "median |diff|",
            "max |diff|",
        ],
        [
            [
                r["backend"],
                p if p == "sequential" else f"{p} ({r['interleave']} at once)",
                f"{r[p]['common_factor']:.3f}",
                f"{r[p]['within2']:.0%}",
                f"{r[p]['within5']:.0%}",
                f"{r[p]['within10']:.0%}",
                f"{r[p]['median_diff']:.1%}",
                f"{r[p]['max_diff']:.1%}",
            ]
            for r in rows
            for p in PROTOCOLS
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
