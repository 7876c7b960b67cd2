"""Accuracy lost to int8 quantization across sub-networks of a trained supernet (digits).

    python benchmarks/bench_int8_accuracy.py                      # trains the smoke PS run first (~4 min)
    python benchmarks/bench_int8_accuracy.py --supernet runs/digits/supernet.pth --samples 50

Trains a supernet with progressive shrinking on the digits toy set (``ofa-deploy train --dataset digits
--recipe smoke``) unless ``--supernet`` names one, then runs ``ofa-deploy eval-subnets --precision int8``:
each sampled sub-network's held-out top-1 in float32 and after post-training quantization (QDQ, calibrated
on 64 training images, run by ONNX Runtime). Reports the drop (float32 minus int8, in points of top-1):
median, range, how many sub-networks lose more than one point, and Kendall tau between the float32 and
int8 accuracy rankings (below 1: an fp32 accuracy predictor would rank int8 sub-networks wrongly).
Writes benchmarks/out/int8-accuracy.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import kendalltau

from ofa_deploy.cli.main import main as cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", help="a trained supernet (default: train the smoke recipe into benchmarks/out)")
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    started = time.perf_counter()
    supernet = Path(args.supernet) if args.supernet else OUT / "digits-ps" / "supernet.pth"
    if not supernet.exists():
        run = ["train", "--dataset", "digits", "--recipe", "smoke", "--out", str(supernet.parent), "--no-progress"]
        if cli(run) != 0:
            return 1
    trained_s = time.perf_counter() - started
    records = OUT / "int8-accuracy.jsonl"
    evaluate = ["eval-subnets", "--supernet", str(supernet), "--dataset", "digits", "--samples", str(args.samples)]
    if cli([*evaluate, "--precision", "int8", "--out", str(records), "--no-progress"]) != 0:
        return 1
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    fp32 = np.array([r["accuracy_fp32"] for r in lines])
    int8 = np.array([r["accuracy"] for r in lines])
    drop = 100 * (fp32 - int8)
    print(f"\nint8 post-training quantization on {len(lines)} sub-networks of {supernet} ({machine()})")
    print_table(
        [
            "sub-networks",
            "fp32 top-1 (median)",
            "int8 top-1 (median)",
            "drop, points (median)",
            "drop range",
            "> 1 point",
            "Kendall tau fp32 vs int8",
        ],
        [
            [
                len(lines),
                f"{100 * np.median(fp32):.1f}",
                f"{100 * np.median(int8):.1f}",
                f"{np.median(drop):+.1f}",
                f"{drop.min():+.1f} … {drop.max():+.1f}",
                int((drop > 1).sum()),
                f"{kendalltau(fp32, int8).statistic:.3f}",
            ]
        ],
    )
    print(f"\ntraining {trained_s:.0f} s, all {time.perf_counter() - started:.0f} s; wrote {records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
