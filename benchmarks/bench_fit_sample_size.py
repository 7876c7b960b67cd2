"""How fidelity grows with the number of end-to-end measurements, and how many resolutions must be profiled.

    python benchmarks/bench_fit_sample_size.py [--backend onnxruntime] [--pool 300] [--repeats 3]

1. A pool of --pool sub-networks over 5 resolutions is measured end to end once (the table's
   protocol, ``validate``; kept in benchmarks/out/pool-<backend>.jsonl, reused with --reuse-pool).
   The last 100 are the test set. For n = 10, 25, 50, 100, 200 measurements drawn from the rest
   (--repeats draws), acc5/acc10 on the test set of: the LUT with a linear calibration (what
   ``validate`` stores), LUT+fit (``fit --lut``) and fit-only (``fit``).
2. Resolutions: the LUT is cut down to 1, 2, 3 or 5 of its resolutions; every key's latency at the
   others is ``a + b * pixels`` fitted per key family over the kept ones. acc10 on test networks
   at resolutions the cut LUT does not have, extended LUT + calibration and LUT+fit (50 measurements).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_fidelity import RESOLUTIONS, open_backend, profiled_lut
from common import OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.latency.fit import Design, fit_measurements, table_basis
from ofa_deploy.latency.measurements import read_measurements, write_measurements
from ofa_deploy.latency.table import LatencyTable
from ofa_deploy.latency.validation import fit_calibration, measurements_of, validate
from ofa_deploy.metrics import within
from ofa_deploy.space.arch import ArchBatch

SIZES = (10, 25, 50, 100, 200)
TEST = 100
KEPT = {1: (192,), 2: (160, 224), 3: (160, 192, 224), 5: RESOLUTIONS}


def accuracy(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    return within(predicted, measured, 0.05), within(predicted, measured, 0.10)


def calibrated(sums_train, y_train, sums_test) -> np.ndarray:
    slope, intercept = fit_calibration(sums_train, y_train)
    return slope * sums_test + intercept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--pool", type=int, default=300, help="sub-networks measured end to end (the last 100 test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, help="timing rounds (default: the device profile's)")
    parser.add_argument("--reuse-pool", action="store_true")
    parser.add_argument("--reuse-luts", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    pool_path = OUT / f"pool-{args.backend}.jsonl"
    with open_backend(args.backend, args.rounds) as (backend, device_name, width):
        table = profiled_lut(backend, device_name, width, OUT / f"{args.backend}-5res.json", args.reuse_luts)
        if not (args.reuse_pool and pool_path.exists()):
            write_measurements(pool_path, measurements_of(validate(table, backend, args.pool, seed=101)))
    pool, _ = read_measurements(pool_path)
    train_pool, test = pool[:-TEST], pool[-TEST:]
    test_batch = ArchBatch.from_archs([m.arch for m in test])
    y_test = np.array([m.latency_ms for m in test])
    lut_test = table.predict_batch(test_batch, calibrated=False)

    rows, record = [], {"machine": machine(), "backend": args.backend, "sizes": {}, "resolutions": {}}
    for n in [s for s in SIZES if s <= len(train_pool)]:
        scores = {"LUT+calibration": [], "LUT+fit": [], "fit only": []}
        for repeat in range(args.repeats):
            picked = np.random.default_rng(repeat).choice(len(train_pool), n, replace=False)
            train = [train_pool[i] for i in picked]
            y = np.array([m.latency_ms for m in train])
            sums = table.predict_batch(ArchBatch.from_archs([m.arch for m in train]), calibrated=False)
            scores["LUT+calibration"].append(accuracy(calibrated(sums, y, lut_test), y_test))
            scores["LUT+fit"].append(accuracy(fit_measurements(train, width, base=table).predict(test_batch), y_test))
            scores["fit only"].append(accuracy(fit_measurements(train, width).predict(test_batch), y_test))
        means = {k: np.mean(v, axis=0).tolist() for k, v in scores.items()}
        record["sizes"][n] = means
        rows.append([n, *[f"{means[k][0]:.0%} / {means[k][1]:.0%}" for k in scores]])
        print(f"n={n}: {means}", file=sys.stderr)

    res_rows = []
    train = train_pool[:50]
    y = np.array([m.latency_ms for m in train])
    train_batch = ArchBatch.from_archs([m.arch for m in train])
    for count, kept in KEPT.items():
        cut = LatencyTable({r: table.tables[r] for r in kept}, table.metadata, source=f"{table.source}[{kept}]")
        basis = table_basis(cut, width)
        unseen = np.array([r not in kept for r in test_batch.r]) if count < len(RESOLUTIONS) else np.ones(TEST, bool)
        target = test_batch[unseen]
        sums_train = Design.build(train_batch, basis).sums.sum(axis=1) + table.call_overhead_ms
        sums_test = Design.build(target, basis).sums.sum(axis=1) + table.call_overhead_ms
        extended = accuracy(calibrated(sums_train, y, sums_test), y_test[unseen])
        fitted = accuracy(fit_measurements(train, width, base=cut).predict(target), y_test[unseen])
        record["resolutions"][count] = {"kept": list(kept), "test_networks": int(unseen.sum()), "extended": extended}
        record["resolutions"][count]["LUT+fit"] = fitted
        res_rows.append(
            [
                count,
                ",".join(map(str, kept)),
                int(unseen.sum()),
                *[f"{a[0]:.0%} / {a[1]:.0%}" for a in (extended, fitted)],
            ]
        )
    (OUT / f"fit_sample_size-{args.backend}.json").write_text(json.dumps(record, indent=1))
    print(f"\n{args.backend}: acc5 / acc10 on {TEST} held-out sub-networks vs measurements used ({machine()})")
    print_table(["measurements", "LUT + calibration", "LUT+fit", "fit only"], rows)
    print("\nProfiled resolutions needed (50 measurements; test networks at resolutions the LUT lacks):")
    print_table(["profiled", "which", "test nets", "extended LUT + calibration", "LUT+fit"], res_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
