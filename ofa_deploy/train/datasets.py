"""Training data: the ``digits`` toy set (offline, inside scikit-learn) and ``imagefolder:PATH``.

A dataset hands out whole batches from a *batch plan* ``(indices, resolution, seed)``, so the
training loop decides the images, the resolution (elastic resolution: one per batch) and the
augmentation seed of every step. That makes a resumed or distributed run see exactly what an
uninterrupted one would, and lets a ``DataLoader`` build batches in worker processes.

Resolutions are the space's ``r`` (128..224). ``digits`` images are 8x8 pixels; blowing them up to
128 px adds no information, only compute, so digits feeds the network ``r // 4`` pixels (32..56):
a sub-network at ``r=160`` sees 40x40 digits. Architectures, accuracy records and predictors keep
the space's ``r``. ImageFolder data is used at ``r`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ofa_deploy.errors import BadInputError
from ofa_deploy.nn.data import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, digits_images, load_image, render_grey

BatchPlan = tuple[Sequence[int], int, int]  # (indices, resolution r, augmentation seed)

DIGITS_HELD_OUT = 0.2
DIGITS_PIXELS_PER_R = 0.25


class TrainingData:
    """What the trainer and ``eval-subnets`` need from a dataset."""

    name: str
    n_classes: int
    pixels_per_r: float = 1.0

    def pixels(self, resolution: int) -> int:
        return max(8, round(resolution * self.pixels_per_r))

    def train_size(self) -> int:
        raise NotImplementedError

    def train_batch(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented training images for ``plan``."""
        raise NotImplementedError

    def eval_batches(
        self, split: str, resolution: int, batch_size: int, limit: int | None = None, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented batches of ``split`` ("train" for BN re-calibration, "held_out" for accuracy);
        ``limit`` images at most, a seeded random subset of them when limited."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"dataset": self.name, "n_classes": self.n_classes, "pixels_per_r": self.pixels_per_r}


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


class DigitsData(TrainingData):
    """scikit-learn's handwritten digits (1,797 8x8 images, 10 classes): a toy that shows the whole
    loop offline in minutes; it says nothing about ImageNet accuracy."""

    name = "digits"
    n_classes = 10
    pixels_per_r = DIGITS_PIXELS_PER_R

    def __init__(self, seed: int = 0) -> None:
        self._splits = digits_images(seed, DIGITS_HELD_OUT)  # a fixed split, not --seed

    def train_size(self) -> int:
        return len(self._splits["train"][1])

    def _render(self, images: torch.Tensor, resolution: int, theta: torch.Tensor | None = None) -> torch.Tensor:
        return render_grey(images, self.pixels(resolution), theta)

    def train_batch(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        indices, resolution, seed = plan
        images, labels = self._splits["train"]
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        gen = torch.Generator().manual_seed(seed)
        n = len(idx)
        # light augmentation: scale 0.9..1.1, rotation +-10 degrees, shift up to one source pixel
        scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
        angle = (torch.rand(n, generator=gen) - 0.5) * (math.pi / 9)
        shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.5
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        return self._render(images[idx], resolution, theta), labels[idx]

    def eval_batches(self, split, resolution, batch_size, limit=None, seed=0):
        images, labels = self._splits[split]
        chosen = torch.from_numpy(_subset(len(labels), limit, seed))
        for start in range(0, len(chosen), batch_size):
            idx = chosen[start : start + batch_size]
            yield self._render(images[idx], resolution), labels[idx]


class ImageFolderData(TrainingData):
    """The ImageNet layout: ``PATH/train/<class>/*.jpg`` and ``PATH/val/<class>/*.jpg`` (held out).

    Training augmentation is the standard one (random resized crop, scale 0.08..1, aspect 3/4..4/3,
    horizontal flip); evaluation resizes the short side to ``r / 0.875`` and centre-crops, as the
    deployment bundles do. Images are decoded with Pillow in ``DataLoader`` worker processes."""

    name = "imagefolder"

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        self.root = root
        train, val = root / "train", root / "val"
        for folder in (train, val):
            if not folder.is_dir():
                raise BadInputError(
                    f"{root}: an ImageFolder dataset needs {folder.name}/ with one sub-folder per class "
                    "(the ImageNet train/val layout)"
                )
        self.classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        if len(self.classes) < 2:
            raise BadInputError(f"{train}: needs at least two class sub-folders, found {len(self.classes)}")
        self.n_classes = len(self.classes)
        self._splits = {"train": self._scan(train), "held_out": self._scan(val)}

    def _scan(self, folder: Path) -> list[tuple[Path, int]]:
        items = []
        for label, name in enumerate(self.classes):
            sub = folder / name
            if sub.is_dir():
                items += [(p, label) for p in sorted(sub.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not items:
            raise BadInputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders")
        return items

    def train_size(self) -> int:
        return len(self._splits["train"])

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root), "classes": self.classes}

    def train_batch(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        indices, resolution, seed = plan
        rng = np.random.default_rng(seed)
        items = [self._splits["train"][i] for i in indices]
        images = np.stack([_random_resized_crop(path, resolution, rng) for path, _ in items])
        return torch.from_numpy(images), torch.tensor([label for _, label in items])

    def eval_batches(self, split, resolution, batch_size, limit=None, seed=0):
        items = self._splits[split]
        chosen = _subset(len(items), limit, seed)
        for start in range(0, len(chosen), batch_size):
            batch = [items[i] for i in chosen[start : start + batch_size]]
            images = np.stack([load_image(path, resolution) for path, _ in batch])
            yield torch.from_numpy(images), torch.tensor([label for _, label in batch])


def _random_resized_crop(path: Path, resolution: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            box = (0, 0, w, h)
            for _ in range(10):
                area = w * h * rng.uniform(0.08, 1.0)
                ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
                if 0 < cw <= w and 0 < ch <= h:
                    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                    box = (left, top, left + cw, top + ch)
                    break
            img = img.resize((resolution, resolution), Image.BILINEAR, box=box)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInputError(f"{path}: not a readable image ({exc})") from None
    array = (array - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return array.transpose(2, 0, 1)


class PlannedBatches(torch.utils.data.Dataset):
    """Map-style view for a ``DataLoader`` whose 'indices' are batch plans (``batch_size=None``)."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data

    def __getitem__(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.train_batch(plan)


def open_dataset(spec: str) -> TrainingData:
    """``digits`` or ``imagefolder:PATH``."""
    if spec == "digits":
        try:
            return DigitsData()
        except ImportError:
            from ofa_deploy.errors import RuntimeMissingError

            raise RuntimeMissingError("--dataset digits needs scikit-learn: pip install 'ofa-deploy[train]'") from None
    if spec.startswith("imagefolder:"):
        return ImageFolderData(spec[len("imagefolder:") :])
    raise BadInputError(f"--dataset: unknown dataset '{spec}'; use 'digits' or 'imagefolder:PATH'")
