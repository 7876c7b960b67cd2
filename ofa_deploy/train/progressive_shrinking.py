"""The progressive-shrinking loop: full network -> elastic kernel -> elastic depth -> elastic width.

Each step takes one batch at one resolution (elastic resolution), samples the phase's
sub-networks (1 for kernel, 2 for depth, 4 for width in the official recipe), and accumulates
their gradients before one SGD step. The loss is cross-entropy with label smoothing plus knowledge
distillation from the full network's soft labels. The learning rate follows a cosine schedule with
linear warm-up, per phase. Width phases first sort the middle channels by importance.

Everything random in a step (its images, resolution, augmentation and sub-networks) derives from
``(seed, phase, step)``, so ``--resume`` after a kill, and every rank of a distributed run, draw the
same.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ofa_deploy.errors import BadInputError
from ofa_deploy.nn.supernet import OFAMobileNetV3, load_checkpoint_file
from ofa_deploy.space.arch import N_BLOCKS, N_STAGES, Arch
from ofa_deploy.train.checkpoint import LOG_FILE, PLOT_FILE, TrainingDirectory, official_state_dict, read_log
from ofa_deploy.train.datasets import BatchPlan, PlannedBatches, TrainingData, open_dataset
from ofa_deploy.train.distributed import DistContext
from ofa_deploy.train.recipe import Phase, Recipe
from ofa_deploy.train.subnet_eval import subnet_accuracy

log = logging.getLogger("ofa_deploy.train")


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run is made of (stored in its state, so ``--resume`` continues the same run)."""

    dataset: str
    recipe: Recipe
    width_mult: float = 1.0
    seed: int = 0
    save_every: int = 50  # steps between training-state checkpoints
    log_every: int = 5
    workers: int = 0  # DataLoader worker processes
    steps_per_phase: int | None = None  # fixed step count per phase instead of the recipe's epochs
    init: str | None = None  # initial weights (and the teacher when the full phase is not run)
    eval_images: int = 1000  # held-out images for the end-of-phase check (a quarter as many for BN re-calibration)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        return cls(**{**data, "recipe": Recipe.from_dict(data["recipe"])})


# ---------------------------------------------------------------------- pure pieces


def step_rng(seed: int, phase_index: int, step: int, purpose: int) -> np.random.Generator:
    """The generator of one step's draws for ``purpose`` (1 sub-networks, 2 resolution, 3 augmentation)."""
    return np.random.default_rng([seed, phase_index, step, purpose])


def sample_subnets(phase: Phase, seed: int, phase_index: int, step: int) -> list[dict[str, list[int]]]:
    """The sub-networks of one step: per block kernel size and expand ratio, per stage depth."""
    rng = step_rng(seed, phase_index, step, 1)
    return [
        {
            "ks": [int(v) for v in rng.choice(phase.ks, N_BLOCKS)],
            "e": [int(v) for v in rng.choice(phase.e, N_BLOCKS)],
            "d": [int(v) for v in rng.choice(phase.d, N_STAGES)],
        }
        for _ in range(phase.subnets_per_step)
    ]


def batch_plan(
    recipe: Recipe, n_train: int, seed: int, phase_index: int, step: int, rank: int = 0, world: int = 1
) -> BatchPlan:
    """This rank's share of the step's batch, the step's resolution and augmentation seed."""
    per_epoch = steps_per_epoch(recipe, n_train)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, phase_index, epoch, 0]).permutation(n_train)
    batch = order[position * recipe.batch_size : (position + 1) * recipe.batch_size]
    resolution = int(step_rng(seed, phase_index, step, 2).choice(recipe.resolutions))
    aug_seed = int(step_rng(seed, phase_index, step, 3).integers(2**31)) + rank
    return [int(i) for i in batch[rank::world]], resolution, aug_seed


def steps_per_epoch(recipe: Recipe, n_train: int) -> int:
    """Full batches per epoch (at least 1): an epoch's left-over images are not used."""
    return max(1, n_train // recipe.batch_size)


def phase_steps(phase: Phase, recipe: Recipe, n_train: int, override: int | None) -> tuple[int, int]:
    """(total steps, warm-up steps) of a phase."""
    per_epoch = steps_per_epoch(recipe, n_train)
    total = override if override is not None else max(1, round(phase.epochs * per_epoch))
    warmup = 0 if override is not None else min(total - 1, round(phase.warmup_epochs * per_epoch))
    return total, max(0, warmup)


def learning_rate(base: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up to ``base``, then cosine decay to 0 over the rest of the phase."""
    if step < warmup:
        return base * (step + 1) / warmup
    t, span = step - warmup, max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * t / span))


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's softmax (official kd_type 'ce')."""
    return torch.mean(torch.sum(-F.softmax(teacher_logits, 1) * F.log_softmax(logits, 1), 1))


def make_optimizer(net: torch.nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; no weight decay on BN parameters and biases."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        (no_decay if ".bn." in name or name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=True)


# ---------------------------------------------------------------------- the loop


class ProgressiveShrinking:
    """One training run: the recipe's phases in order over the supernet, resumable, on one process or every rank."""

    def __init__(self, out: Path, settings: TrainSettings, dist: DistContext, progress: bool = True) -> None:
        self.dir = TrainingDirectory(out)
        self.settings = settings
        self.recipe = settings.recipe
        self.dist = dist
        self.progress = progress and dist.is_main
        self.data: TrainingData = open_dataset(settings.dataset)
        torch.manual_seed(settings.seed)
        self.net = OFAMobileNetV3(
            width_mult=settings.width_mult, n_classes=self.data.n_classes, dropout_rate=self.recipe.dropout
        ).to(dist.device)
        if settings.init:
            self._load_init(settings.init)
        self.teacher: OFAMobileNetV3 | None = None
        self.completed: list[str] = []
        self.phase_index, self.step = 0, 0
        self.optimizer_state: dict | None = None
        self.pending_log: list[dict] = []
        self.started = time.monotonic()
        self.elapsed_before = 0.0

    def _init_state(self, path: str) -> dict[str, torch.Tensor]:
        """``--init`` weights; a checkpoint for another class count keeps this run's (new) classifier."""
        state = load_checkpoint_file(path)
        own = self.net.state_dict()
        key = "classifier.linear.weight"
        if key in state and state[key].shape != own[key].shape:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            state.update({k: v for k, v in own.items() if k.startswith("classifier.")})
        return state

    def _load_init(self, path: str) -> None:
        self.net.load_state_dict(self._init_state(path))

    # ------------------------------------------------------------------ resume
    def restore(self) -> None:
        state = self.dir.load_state()
        self.net.load_state_dict(state["model"])
        self.completed = list(state["completed"])
        self.phase_index, self.step = state["phase_index"], state["step"]
        self.optimizer_state = state.get("optimizer")
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        phase = self.recipe.phases[self.phase_index].name if self.phase_index < len(self.recipe.phases) else "done"
        if self.dist.is_main:
            log.info(
                "resuming %s: phases done %s; %s from step %d",
                self.dir.root,
                self.completed or "none",
                phase,
                self.step,
            )

    def _state(self, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "model": official_state_dict(self.net),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "completed": list(self.completed),
            "phase_index": self.phase_index,
            "step": self.step,
            "elapsed_s": self.elapsed(),
        }

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def checkpoint(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Training state first, then the log lines up to it (so the log never runs ahead of the state)."""
        if self.dist.is_main:
            self.dir.save_state(self._state(optimizer))
            self.dir.append_log(self.pending_log)
        self.pending_log = []
        self.dist.barrier()

    # ------------------------------------------------------------------ teacher
    def _teacher(self) -> OFAMobileNetV3 | None:
        """The full network: the end of the 'full' phase, else the ``--init`` weights."""
        if self.recipe.kd_ratio <= 0:
            return None
        if self.teacher is None:
            full = self.dir.phase_path("full")
            if full.is_file():
                self.teacher = self._frozen_copy(load_checkpoint_file(full))
            elif self.settings.init:
                self.teacher = self._frozen_copy(self._init_state(self.settings.init))
            else:
                raise BadInputError(
                    "distillation needs a teacher: include the 'full' phase, or give --init CKPT (a trained full net)"
                )
        return self.teacher

    def _frozen_copy(self, state: dict) -> OFAMobileNetV3:
        teacher = copy.deepcopy(self.net)
        teacher.load_state_dict(state)
        teacher.set_max_net()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher.train()  # the official code runs the teacher in train mode (batch statistics)

    # ------------------------------------------------------------------ phases
    def run(self) -> dict[str, Any]:
        if self.step == 0 and self.phase_index == 0 and not self.completed:
            self.dist.broadcast_module(self.net)
        for index in range(self.phase_index, len(self.recipe.phases)):
            self.phase_index = index
            self._run_phase(self.recipe.phases[index])
        if self.dist.is_main:
            write_plot(self.dir.root)
        return {"completed": self.completed, "elapsed_s": self.elapsed()}

    def _run_phase(self, phase: Phase) -> None:
        from tqdm import tqdm

        total, warmup = phase_steps(phase, self.recipe, self.data.train_size(), self.settings.steps_per_phase)
        if self.step == 0 and phase.sort_channels_stage is not None:
            self.net.re_organize_middle_weights(phase.sort_channels_stage)
        base_lr = self.recipe.lr(phase)
        optimizer = make_optimizer(self.net, self.recipe, base_lr)
        if self.step > 0 and self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        self.optimizer_state = None
        teacher = self._teacher() if phase.distill else None
        params = [p for p in self.net.parameters()]
        plans = [
            batch_plan(
                self.recipe,
                self.data.train_size(),
                self.settings.seed,
                self.phase_index,
                step,
                self.dist.rank,
                self.dist.world_size,
            )
            for step in range(self.step, total)
        ]
        loader = torch.utils.data.DataLoader(
            PlannedBatches(self.data),
            sampler=plans,
            batch_size=None,
            num_workers=self.settings.workers,
            persistent_workers=False,
        )
        self.net.train()
        bar = tqdm(total=total, initial=self.step, desc=phase.name, unit="step", disable=not self.progress or None)
        for (images, labels), plan in zip(loader, plans):
            images, labels = images.to(self.dist.device), labels.to(self.dist.device)
            lr = learning_rate(base_lr, self.step, total, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            subnets = sample_subnets(phase, self.settings.seed, self.phase_index, self.step)
            self.dist.check_same(f"{self.step}:{plan[1]}:{subnets}")
            soft = None
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(images)
            optimizer.zero_grad(set_to_none=True)
            losses = []
            for subnet in subnets:
                self.net.set_active_subnet(**subnet)
                logits = self.net(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=self.recipe.label_smoothing)
                if soft is not None:
                    loss = loss + self.recipe.kd_ratio * distillation_loss(logits, soft)
                loss.backward()
                losses.append(loss.item())
            self.dist.average_gradients(params)
            optimizer.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", r=plan[1])
            if self.step % self.settings.log_every == 0 or self.step == total:
                self.pending_log.append(
                    {
                        "event": "step",
                        "phase": phase.name,
                        "step": self.step,
                        "steps": total,
                        "lr": lr,
                        "loss": float(np.mean(losses)),
                        "resolution": plan[1],
                        "subnets": [Arch(r=plan[1], **s).stable_hash() for s in subnets],
                        "elapsed_s": round(self.elapsed(), 2),
                    }
                )
            if self.step % self.settings.save_every == 0 and self.step < total:
                self.checkpoint(optimizer)
        bar.close()
        self._finish_phase(phase)

    def _finish_phase(self, phase: Phase) -> None:
        record = {"event": "phase_end", "phase": phase.name, "elapsed_s": round(self.elapsed(), 2)}
        if self.dist.is_main:
            record.update(self._phase_accuracy(phase))
            log.info(
                "phase %s done: held-out top-1 largest %.3f, smallest %.3f (%.0f s so far)",
                phase.name,
                record["acc_largest"],
                record["acc_smallest"],
                record["elapsed_s"],
            )
        self.completed.append(phase.name)
        self.pending_log.append(record)
        self.phase_index += 1
        self.step = 0
        if self.dist.is_main:
            self.dir.save_phase(phase.name, self.net, self._supernet_info())
        self.checkpoint(None)

    def _phase_accuracy(self, phase: Phase) -> dict[str, float]:
        """Held-out top-1 of the phase's largest and smallest sub-network (BN re-calibrated)."""
        rs = self.recipe.resolutions
        largest = Arch(
            ks=[max(phase.ks)] * N_BLOCKS, e=[max(phase.e)] * N_BLOCKS, d=[max(phase.d)] * N_STAGES, r=max(rs)
        )
        smallest = Arch(
            ks=[min(phase.ks)] * N_BLOCKS, e=[min(phase.e)] * N_BLOCKS, d=[min(phase.d)] * N_STAGES, r=min(rs)
        )
        n = self.settings.eval_images
        kwargs = {"calib_images": max(1, n // 4), "held_out_images": n, "device": self.dist.device}
        result = {
            "acc_largest": subnet_accuracy(self.net, largest, self.data, **kwargs),
            "acc_smallest": subnet_accuracy(self.net, smallest, self.data, **kwargs),
        }
        self.net.train()
        return result

    def _supernet_info(self) -> dict[str, Any]:
        return {
            "format": "ofa-deploy-supernet/1",
            **self.data.describe(),
            "width_mult": self.settings.width_mult,
            "resolutions": list(self.recipe.resolutions),
            "phases_completed": list(self.completed),
            "recipe": self.recipe.name,
            "seed": self.settings.seed,
        }


def write_plot(root: Path) -> Path | None:
    """Loss per step and held-out top-1 at each phase end, one colour per phase."""
    records = read_log(root / LOG_FILE)
    steps = [r for r in records if r.get("event") == "step"]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ofa_deploy.files import atomic_write_figure

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    phases = list(dict.fromkeys(r["phase"] for r in steps))
    offset = 0
    for name in phases:
        mine = [r for r in steps if r["phase"] == name]
        ax_loss.plot([offset + r["step"] for r in mine], [r["loss"] for r in mine], label=name)
        offset += mine[-1]["steps"]
    ax_loss.set(xlabel="step (all phases)", ylabel="training loss (CE + KD)", title="loss per phase")
    ax_loss.legend(fontsize=8)
    ends = [r for r in records if r.get("event") == "phase_end" and "acc_largest" in r]
    x = np.arange(len(ends))
    ax_acc.bar(x - 0.2, [r["acc_largest"] for r in ends], 0.4, label="largest")
    ax_acc.bar(x + 0.2, [r["acc_smallest"] for r in ends], 0.4, label="smallest")
    ax_acc.set_xticks(x, [r["phase"] for r in ends])
    ax_acc.set(ylim=(0, 1), ylabel="held-out top-1", title="after each phase")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    path = root / PLOT_FILE
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path
