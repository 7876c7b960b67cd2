"""Images for BN re-calibration and INT8 calibration: an ImageFolder-layout directory read with Pillow (no
torchvision), and scikit-learn's ``digits`` toy set.

Preprocessing is the OFA evaluation transform: resize the short side to ``ceil(r / 0.875)``,
centre-crop ``r x r``, scale to 0..1 and normalise with the ImageNet mean and std. The same
numbers go into every bundle manifest, so a deployment feeds the network what it was calibrated on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ofa_deploy.errors import BadInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


def preprocessing(resolution: int) -> dict:
    """The preprocessing for input resolution ``resolution`` as a manifest records it (what :func:`load_image` does)."""
    return {
        "resize_short_side": math.ceil(resolution / CROP_RATIO),
        "center_crop": resolution,
        "color": "RGB",
        "scale": "pixel / 255",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def image_files(root: str | Path) -> list[Path]:
    """Images under ``root`` (ImageFolder layout: one sub-folder per class, or flat)."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: calibration data must be a directory of images (ImageFolder layout)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BadInputError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files


def load_image(path: Path, resolution: int) -> np.ndarray:
    """One image preprocessed for ``resolution``: a (3, r, r) float32 array; BadInputError if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            short = math.ceil(resolution / CROP_RATIO)
            w, h = img.size
            scale = short / min(w, h)
            img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInputError(f"{path}: not a readable image ({exc})") from None
    array = (array - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return array.transpose(2, 0, 1)


def image_batches(
    root: str | Path, resolution: int, batch_size: int = 16, max_images: int = 512, seed: int = 0
) -> Iterator[torch.Tensor]:
    """Up to ``max_images`` images under ``root`` (a seeded random choice), preprocessed, ``batch_size`` at a time."""
    files = image_files(root)
    order = np.random.default_rng(seed).permutation(len(files))[:max_images]
    chosen = [files[i] for i in order]
    for start in range(0, len(chosen), batch_size):
        batch = [load_image(p, resolution) for p in chosen[start : start + batch_size]]
        yield torch.from_numpy(np.stack(batch))


def digits_images(seed: int = 0, held_out: float = 0.2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes), normalised to zero mean and
    unit variance, split once (``seed``) into ``{"train": (images, labels), "held_out": (...)}``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)
    images = (images - images.mean()) / images.std()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    n_held = round(len(labels) * held_out)
    return {
        "held_out": (images[order[:n_held]], labels[order[:n_held]]),
        "train": (images[order[n_held:]], labels[order[n_held:]]),
    }


def render_grey(images: torch.Tensor, size: int, theta: torch.Tensor | None = None) -> torch.Tensor:
    """(N, h, w) grey images as (N, 3, size, size): bilinear resize, or an affine warp ``theta`` (N, 2, 3)."""
    x = images[:, None].expand(-1, 3, -1, -1)
    if theta is None:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
