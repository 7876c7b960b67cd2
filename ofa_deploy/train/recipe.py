"""Progressive-shrinking recipes: the phases in order, their search-space slices, epochs and learning rates.

``imagenet`` is the official schedule, taken from the OFA repository's ``train_ofa_net.py``
(mit-han-lab/once-for-all; the elastic phases) and the paper (Cai et al., ICLR 2020, Sec. 3.2 and
Appendix: the full network is trained first and then used as the teacher). Learning rates are per
64 images (the official ``base_batch_size``) and are scaled linearly with the global batch, as the
official script scales them with the number of GPUs. ``smoke`` runs every phase in minutes on a
laptop CPU on the ``digits`` toy set; it shows that the machinery works, not ImageNet accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ofa_deploy.errors import BadInputError
from ofa_deploy.space.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, RESOLUTIONS

BASE_BATCH = 64  # the batch the learning rates below are given for


@dataclass(frozen=True)
class Phase:
    """One stage of progressive shrinking: which choices are elastic and how long to train."""

    name: str
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    subnets_per_step: int  # sub-networks sampled per step, gradients accumulated (official dynamic_batch_size)
    epochs: float
    base_lr: float  # per BASE_BATCH images
    warmup_epochs: float = 0.0
    sort_channels_stage: int | None = None  # channel sorting before the phase (None: no sorting)
    distill: bool = True  # KD from the full network's soft labels (not for the full network itself)

    @property
    def is_static(self) -> bool:
        return len(self.ks) == len(self.e) == len(self.d) == 1


K, E, D = tuple(sorted(KERNEL_SIZES, reverse=True)), tuple(sorted(EXPAND_RATIOS, reverse=True)), tuple(sorted(DEPTHS))
K_MAX, E_MAX, D_MAX = max(K), max(E), max(D)

# The paper's phases (official train_ofa_net.py: task kernel; depth phase 1/2; expand phase 1/2).
_PAPER_PHASES = (
    Phase("full", (K_MAX,), (E_MAX,), (D_MAX,), 1, 180, 0.08125, 5, distill=False),  # 2.6 @ batch 2048
    Phase("kernel", K, (E_MAX,), (D_MAX,), 1, 120, 3e-2, 5),
    Phase("depth1", K, (E_MAX,), (3, 4), 2, 25, 2.5e-3, 0),
    Phase("depth2", K, (E_MAX,), D, 2, 120, 7.5e-3, 5),
    Phase("width1", K, (6, 4), D, 4, 25, 2.5e-3, 0, sort_channels_stage=0),
    Phase("width2", K, E, D, 4, 120, 7.5e-3, 5, sort_channels_stage=1),
)
PHASE_NAMES = tuple(p.name for p in _PAPER_PHASES)


@dataclass(frozen=True)
class Recipe:
    """A progressive-shrinking schedule: phases, global batch, resolutions, loss and SGD settings."""

    name: str
    phases: tuple[Phase, ...]
    batch_size: int  # global, over all processes
    resolutions: tuple[int, ...]  # sampled per batch (elastic resolution)
    label_smoothing: float = 0.1
    kd_ratio: float = 1.0
    weight_decay: float = 3e-5  # not applied to BN parameters and biases (official no_decay_keys "bn#bias")
    momentum: float = 0.9  # SGD with Nesterov momentum
    dropout: float = 0.1
    source: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def lr(self, phase: Phase) -> float:
        return phase.base_lr * self.batch_size / BASE_BATCH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        phases = tuple(
            Phase(**{**p, "ks": tuple(p["ks"]), "e": tuple(p["e"]), "d": tuple(p["d"])}) for p in data["phases"]
        )
        return cls(**{**data, "phases": phases, "resolutions": tuple(data["resolutions"])})


IMAGENET = Recipe(
    "imagenet",
    _PAPER_PHASES,
    batch_size=2048,
    resolutions=(128, 160, 192, 224),
    source=(
        "elastic phases: mit-han-lab/once-for-all train_ofa_net.py (n_epochs, base_lr per 64 images, warmup_epochs, "
        "dynamic_batch_size, label_smoothing 0.1, weight_decay 3e-5, SGD Nesterov 0.9, kd_ratio 1.0, image_size "
        "128,160,192,224); full network: Cai et al., ICLR 2020, 180 epochs at lr 2.6 for batch 2048"
    ),
)

SMOKE = Recipe(
    "smoke",
    tuple(
        replace(p, epochs=epochs, base_lr=lr, warmup_epochs=warmup)
        for p, epochs, lr, warmup in zip(
            _PAPER_PHASES,
            (2, 1, 0.5, 1, 0.5, 1),
            (0.1, 0.03, 0.01, 0.02, 0.01, 0.02),
            (0.5, 0.1, 0, 0.1, 0, 0.1),
        )
    ),
    batch_size=32,
    resolutions=(128, 160),
    dropout=0.0,
    source="a few epochs per phase on the digits toy set; same phases, sampling and losses as imagenet",
)

RECIPES = {r.name: r for r in (IMAGENET, SMOKE)}


def get_recipe(name: str) -> Recipe:
    """The recipe named ``name`` (``imagenet`` or ``smoke``); BadInputError naming the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise BadInputError(f"--recipe: unknown recipe '{name}'; known: {', '.join(RECIPES)}") from None


def select_phases(recipe: Recipe, names: str | None) -> Recipe:
    """The recipe restricted to ``names`` (comma-separated), kept in the paper's order."""
    if not names:
        return recipe
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in PHASE_NAMES]
    if unknown or not wanted:
        raise BadInputError(f"--phases: unknown phase '{(unknown or [names])[0]}'; phases are {','.join(PHASE_NAMES)}")
    return replace(recipe, phases=tuple(p for p in recipe.phases if p.name in wanted))


def customise(
    recipe: Recipe,
    *,
    phases: str | None = None,
    batch_size: int | None = None,
    resolutions: tuple[int, ...] | None = None,
    epochs_per_phase: float | None = None,
    subnets_per_step: int | None = None,
) -> Recipe:
    """The recipe with the command line's overrides."""
    recipe = select_phases(recipe, phases)
    changes: dict[str, Any] = {}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if resolutions is not None:
        bad = [r for r in resolutions if r not in RESOLUTIONS]
        if bad:
            raise BadInputError(
                f"--resolutions: {bad[0]} is outside the space ({RESOLUTIONS[0]}..{RESOLUTIONS[-1]} step 4)"
            )
        changes["resolutions"] = tuple(resolutions)
    if epochs_per_phase is not None or subnets_per_step is not None:
        changes["phases"] = tuple(
            replace(
                p,
                epochs=p.epochs if epochs_per_phase is None else epochs_per_phase,
                subnets_per_step=1 if p.is_static or subnets_per_step is None else subnets_per_step,
            )
            for p in recipe.phases
        )
    return replace(recipe, **changes)
