"""``ofa-deploy train``: train a supernet with progressive shrinking (resumable; DDP under ``torchrun``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import POSITIVE, SEED, WIDTH_MULT, Bound, add_bounded, checked

BATCH = Bound(int, 1, 1_000_000)
STEPS = Bound(int, 1, 100_000_000)
SUBNETS = Bound(int, 1, 64)
WORKERS = Bound(int, 0, 256)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy train`` and its flags."""
    p = subparsers.add_parser(
        "train",
        help="train a supernet with progressive shrinking (full -> kernel -> depth -> width)",
        description="Phases in order: full, kernel, depth1, depth2, width1, width2. Under "
        "`torchrun --nproc-per-node N -m ofa_deploy train ...` it trains data-parallel (gloo on CPU, NCCL on GPUs).",
    )
    p.add_argument("--dataset", required=True, help="'digits' (scikit-learn's toy set, offline) or 'imagefolder:PATH'")
    p.add_argument("--out", required=True, help="training directory (supernet.pth, phases/, train_log.jsonl, plot)")
    p.add_argument("--recipe", help="'imagenet' (the paper's epochs and LRs) or 'smoke' (default: smoke for digits)")
    p.add_argument("--phases", help="comma-separated subset of full,kernel,depth1,depth2,width1,width2")
    add_bounded(p, "--width-mult", WIDTH_MULT, "width multiplier (default 1.0)", default=1.0)
    p.add_argument("--resolutions", help="resolutions r sampled per batch, e.g. 128,160 (default: the recipe's)")
    add_bounded(p, "--batch-size", BATCH, "global batch size (default: the recipe's); LRs scale with it")
    add_bounded(p, "--epochs-per-phase", POSITIVE, "epochs of every phase (default: the recipe's)")
    add_bounded(p, "--steps-per-phase", STEPS, "a fixed number of steps per phase instead of epochs (quick runs)")
    add_bounded(p, "--subnets-per-step", SUBNETS, "sub-networks per step in elastic phases (default 1/2/4 as official)")
    add_bounded(p, "--save-every", STEPS, "steps between resumable checkpoints (default 50)", default=50)
    add_bounded(p, "--log-every", STEPS, "steps between train_log.jsonl records (default 5)", default=5)
    add_bounded(
        p, "--eval-images", STEPS, "held-out images for the check after each phase (default 1000)", default=1000
    )
    add_bounded(p, "--workers", WORKERS, "data-loading worker processes (default 0 for digits, 4 otherwise)")
    add_bounded(p, "--seed", SEED, "random seed (default 0)", default=0)
    p.add_argument("--init", help="initial supernet weights (official layout); the teacher when 'full' is not run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved step")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON document (summary) when done")
    p.set_defaults(run=checked(run))


def _settings(args: argparse.Namespace):
    from ofa_deploy.cli.common import parse_resolutions
    from ofa_deploy.train.progressive_shrinking import TrainSettings
    from ofa_deploy.train.recipe import customise, get_recipe

    recipe = get_recipe(args.recipe or ("smoke" if args.dataset == "digits" else "imagenet"))
    recipe = customise(
        recipe,
        phases=args.phases,
        batch_size=args.batch_size,
        resolutions=parse_resolutions(args.resolutions) if args.resolutions else None,
        epochs_per_phase=args.epochs_per_phase,
        subnets_per_step=args.subnets_per_step,
    )
    workers = args.workers if args.workers is not None else (0 if args.dataset == "digits" else 4)
    return TrainSettings(
        dataset=args.dataset,
        recipe=recipe,
        width_mult=args.width_mult,
        seed=args.seed,
        save_every=args.save_every,
        log_every=args.log_every,
        eval_images=args.eval_images,
        workers=workers,
        steps_per_phase=args.steps_per_phase,
        init=args.init,
    )


def run(args: argparse.Namespace) -> int:
    """Train (or ``--resume``) a supernet in ``--out`` with progressive shrinking; only rank 0 prints and writes."""
    from contextlib import nullcontext

    from ofa_deploy.cli.output import print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.files import output_lock
    from ofa_deploy.train.checkpoint import LOG_FILE, PLOT_FILE, SUPERNET_FILE, TrainingDirectory
    from ofa_deploy.train.distributed import init_distributed
    from ofa_deploy.train.progressive_shrinking import ProgressiveShrinking, TrainSettings

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory")
    directory = TrainingDirectory(out)
    settings = _settings(args)  # validates the flags even when resuming
    if args.resume:
        try:
            stored = TrainSettings.from_dict(directory.load_state()["settings"])
        except (KeyError, TypeError, ValueError) as exc:  # written by another version, or damaged
            raise BadInputError(
                f"--resume: {directory.state_path} holds training settings this version cannot read "
                f"({type(exc).__name__}: {exc}); start a new run with another --out"
            ) from None
        if stored.dataset != settings.dataset:
            raise BadInputError(f"--resume: {out} was trained on '{stored.dataset}', not '{settings.dataset}'")
        settings = stored
    elif directory.has_run():
        raise BadInputError(f"{out} holds a training run; pass --resume to continue it, or choose another --out")
    dist = init_distributed()
    try:
        lock = output_lock(directory.state_path) if dist.is_main else nullcontext()
        with lock:
            trainer = ProgressiveShrinking(out, settings, dist, progress=not args.no_progress)
            if args.resume:
                trainer.restore()
            summary = trainer.run()
    finally:
        dist.close()
    if not dist.is_main:
        return 0
    doc = {
        "out": str(out),
        "supernet": str(out / SUPERNET_FILE),
        "log": str(out / LOG_FILE),
        "plot": str(out / PLOT_FILE),
        "world_size": dist.world_size,
        **summary,
    }
    if args.json:
        print_json(doc)
    else:
        print(
            f"trained phases {', '.join(summary['completed'])} in {summary['elapsed_s']:.0f} s; wrote {doc['supernet']}"
        )
    return 0
