"""Accuracy of sub-networks of a trained supernet: BN re-calibration on training images, then top-1
on the held-out split (``ofa-deploy eval-subnets``, and the per-phase check during training)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ofa_deploy.nn.bn_calibration import recalibrate_bn
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.arch import Arch, largest_arch, sample_arch, smallest_arch
from ofa_deploy.train.datasets import TrainingData

CALIB_IMAGES = 500
EVAL_BATCH = 100


@torch.no_grad()
def subnet_accuracy(
    supernet: OFAMobileNetV3,
    arch: Arch,
    data: TrainingData,
    calib_images: int = CALIB_IMAGES,
    held_out_images: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> float:
    """Top-1 (0..1) of ``arch`` on the held-out split after re-calibrating its BN statistics."""
    was_training = supernet.training
    supernet.set_active_arch(arch)
    net = supernet.get_active_subnet().to(device)
    supernet.train(was_training)
    recalibrate_bn(
        net, ((x.to(device), y) for x, y in data.eval_batches("train", arch.r, EVAL_BATCH, calib_images, seed))
    )
    net.eval()
    correct = seen = 0
    for x, y in data.eval_batches("held_out", arch.r, EVAL_BATCH, held_out_images, seed):
        correct += int((net(x.to(device)).argmax(1).cpu() == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


def archs_to_evaluate(n: int, resolutions: Sequence[int], seed: int) -> list[Arch]:
    """The largest and smallest sub-networks (at the largest / smallest resolution) and ``n``
    random ones, without duplicates."""
    rng = np.random.default_rng(seed)
    archs = [largest_arch(max(resolutions)), smallest_arch(min(resolutions))]
    tries = 0
    while len(archs) < n + 2 and tries < 100 * (n + 2):
        arch = sample_arch(rng, resolutions)
        tries += 1
        if arch not in archs:
            archs.append(arch)
    return archs


def evaluate_archs(
    supernet: OFAMobileNetV3,
    archs: Sequence[Arch],
    data: TrainingData,
    calib_images: int = CALIB_IMAGES,
    device: torch.device | str = "cpu",
    on_result: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """One record per arch: the Arch object plus ``accuracy``."""
    from tqdm import tqdm

    records = []
    for arch in tqdm(archs, desc="evaluating", unit="subnet", disable=not progress or None, leave=False):
        record = {**arch.to_dict(), "accuracy": subnet_accuracy(supernet, arch, data, calib_images, device=device)}
        records.append(record)
        if on_result is not None:
            on_result(record)
    return records
