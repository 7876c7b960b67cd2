"""Re-calibrate BatchNorm statistics of a (sub-)network on a few batches of data.

Shared supernet BN statistics are those of the largest network; a sub-network's own activations
differ, so OFA re-estimates the running mean/var of the active channels before evaluating or
deploying it. Works on the supernet with an active arch (only the active slice of each BN is
written) and on a static extracted network alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ofa_deploy.nn.dynamic import DynamicBatchNorm2d


class _BatchStats:
    """Running average of per-channel batch mean and variance, weighted by batch size."""

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.count = 0

    def add(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        if self.mean is None:
            self.mean, self.var = mean * n, var * n
        else:
            self.mean, self.var = self.mean + mean * n, self.var + var * n
        self.count += n


@contextmanager
def _collect(module: nn.Module, bn: nn.BatchNorm2d, stats: _BatchStats):
    """Make ``module`` normalise with batch statistics and record them, for the active channels."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        stats.add(mean.detach(), var.detach(), x.shape[0])
        return F.batch_norm(x, mean, var, bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps)

    module.forward = forward
    try:
        yield
    finally:
        del module.forward


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> int:
    """Re-estimate running statistics of every BatchNorm that the forward pass uses.

    ``batches`` yields input tensors or ``(input, target)`` pairs. Returns the number of images
    seen. BN layers the active network does not reach keep their statistics.
    """
    targets: list[tuple[nn.Module, nn.BatchNorm2d]] = []
    inner = set()
    for m in model.modules():
        if isinstance(m, DynamicBatchNorm2d):
            targets.append((m, m.bn))
            inner.add(id(m.bn))
    targets += [(m, m) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in inner]

    was_training = model.training
    model.eval()
    stats = [_BatchStats() for _ in targets]
    seen = 0
    with ExitStack() as stack:
        for (module, bn), s in zip(targets, stats):
            stack.enter_context(_collect(module, bn, s))
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(images)
            seen += images.shape[0]
    for (_, bn), s in zip(targets, stats):
        if s.count == 0:
            continue
        c = s.mean.shape[0]
        bn.running_mean[:c] = s.mean / s.count
        bn.running_var[:c] = s.var / s.count
    model.train(was_training)
    return seen
