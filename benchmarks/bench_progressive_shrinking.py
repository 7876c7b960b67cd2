"""Does progressive shrinking help? The 8 sub-networks of the paper's figure (D2/D4 x E3/E6 x K3/K7)
after PS vs after training the same supernet by sampling all sub-networks from the start, with the
same budget (the same number of sub-network forward/backward passes; no teacher for the baseline,
whose budget includes what PS spends on the full network).

    python benchmarks/bench_progressive_shrinking.py [--dataset digits] [--ps DIR] [--out benchmarks/out]

``--ps DIR`` reuses a finished ``ofa-deploy train`` run instead of training PS again. Writes
``progressive_shrinking.json`` and ``progressive_shrinking.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, machine, print_table

FIGURE_ARCHS = [(d, e, k) for d in (2, 4) for e in (3, 6) for k in (3, 7)]


def subnet_passes(recipe, n_train: int) -> int:
    from ofa_deploy.train.progressive_shrinking import phase_steps

    return sum(phase_steps(p, recipe, n_train, None)[0] * p.subnets_per_step for p in recipe.phases)


def train(out: Path, recipe, dataset: str, seed: int) -> float:
    from ofa_deploy.train.distributed import DistContext
    from ofa_deploy.train.progressive_shrinking import ProgressiveShrinking, TrainSettings

    start = time.perf_counter()
    ProgressiveShrinking(out, TrainSettings(dataset=dataset, recipe=recipe, seed=seed), DistContext()).run()
    return time.perf_counter() - start


def baseline_recipe(ps_recipe, n_train: int):
    """One phase over the whole space, 4 sub-networks per step, as many passes as PS."""
    from ofa_deploy.train.progressive_shrinking import steps_per_epoch
    from ofa_deploy.train.recipe import D, E, K, Phase

    per_step = 4
    steps = subnet_passes(ps_recipe, n_train) / per_step
    first = ps_recipe.phases[0]  # from scratch: the learning rate and warm-up PS gives the full network
    epochs = steps / steps_per_epoch(ps_recipe, n_train)
    phase = Phase("all", K, E, D, per_step, epochs, first.base_lr, first.warmup_epochs, distill=False)
    return replace(ps_recipe, name="all-at-once", phases=(phase,))


def figure_accuracies(checkpoint: Path, dataset, r: int) -> dict[str, float]:
    from ofa_deploy.nn.supernet import load_supernet
    from ofa_deploy.space.arch import Arch
    from ofa_deploy.train.subnet_eval import subnet_accuracy

    net = load_supernet(checkpoint)
    result = {}
    for d, e, k in FIGURE_ARCHS:
        arch = Arch(ks=[k] * 20, e=[e] * 20, d=[d] * 5, r=r)
        result[f"D{d}-E{e}-K{k}"] = subnet_accuracy(net, arch, dataset)
    return result


def plot(path: Path, ps: dict[str, float], base: dict[str, float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ofa_deploy.files import atomic_write_figure

    names = list(ps)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.bar(x - 0.2, [100 * base[n] for n in names], 0.4, label="all sub-networks from the start")
    ax.bar(x + 0.2, [100 * ps[n] for n in names], 0.4, label="progressive shrinking")
    ax.set_xticks(x, names, rotation=30)
    ax.set(ylabel="held-out top-1 (%)", title=title, ylim=(0, 115))
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--recipe", default="smoke")
    parser.add_argument("--ps", type=Path, help="a finished `ofa-deploy train` directory to reuse for PS")
    parser.add_argument("--work", type=Path, default=OUT / "progressive_shrinking_runs")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from ofa_deploy.train.checkpoint import TrainingDirectory
    from ofa_deploy.train.datasets import open_dataset
    from ofa_deploy.train.progressive_shrinking import TrainSettings
    from ofa_deploy.train.recipe import get_recipe

    data = open_dataset(args.dataset)
    if args.ps:
        ps_dir, ps_seconds = args.ps, None
        state = TrainingDirectory(ps_dir).load_state()
        ps_recipe = TrainSettings.from_dict(state["settings"]).recipe
        ps_seconds = state.get("elapsed_s")
    else:
        ps_recipe = get_recipe(args.recipe)
        ps_dir = args.work / "ps"
        ps_seconds = train(ps_dir, ps_recipe, args.dataset, args.seed)
    base_recipe = baseline_recipe(ps_recipe, data.train_size())
    base_seconds = train(args.work / "all_at_once", base_recipe, args.dataset, args.seed)
    r = max(ps_recipe.resolutions)
    ps = figure_accuracies(ps_dir / "supernet.pth", data, r)
    base = figure_accuracies(args.work / "all_at_once" / "supernet.pth", data, r)
    passes = subnet_passes(ps_recipe, data.train_size())
    print_table(
        ["sub-network", "all at once", "PS", "PS gain (points)"],
        [[n, f"{100 * base[n]:.1f}", f"{100 * ps[n]:.1f}", f"{100 * (ps[n] - base[n]):+.1f}"] for n in ps],
    )
    print(f"budget: {passes} sub-network passes each; PS {ps_seconds:.0f} s, all-at-once {base_seconds:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "dataset": args.dataset,
        "recipe": ps_recipe.name,
        "resolution": r,
        "subnet_passes": passes,
        "seconds": {"progressive_shrinking": ps_seconds, "all_at_once": base_seconds},
        "accuracy": {"progressive_shrinking": ps, "all_at_once": base},
        "machine": machine(),
    }
    (args.out / "progressive_shrinking.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(args.out / "progressive_shrinking.png", ps, base, f"{args.dataset}: 8 sub-networks, r={r}, same budget")
    print(f"wrote {args.out / 'progressive_shrinking.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
