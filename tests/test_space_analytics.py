"""Arch-only counts against forward hooks on the extracted torch network."""

import numpy as np
import pytest
import torch
from torch import nn

from ofa_deploy.nn.layers import ResidualBlock, SEModule
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.analytics import arch_stats
from ofa_deploy.space.arch import largest_arch, sample_batch, smallest_arch


def hook_counts(net: nn.Module, r: int) -> tuple[int, int]:
    """MACs of every conv/linear and peak live activations, measured with hooks (batch 1)."""
    macs = 0
    peak = 0
    pending = [0]
    se_convs = {id(m) for se in net.modules() if isinstance(se, SEModule) for m in se.modules()}

    def conv_hook(module, inputs, output):
        nonlocal macs, peak
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs += output.numel() * module.in_channels // module.groups * k
        else:
            macs += module.in_features * module.out_features
        if id(module) not in se_convs:
            x = inputs[0]
            skip = pending[0] if x.data_ptr() != pending_ptr[0] else 0
            peak = max(peak, x.numel() + output.numel() + skip)

    def se_hook(module, inputs, output):
        nonlocal peak
        peak = max(peak, inputs[0].numel() + output.numel() + pending[0])

    pending_ptr = [None]

    def block_pre(module, inputs):
        if module.shortcut is not None:
            pending[0], pending_ptr[0] = inputs[0].numel(), inputs[0].data_ptr()

    def block_post(module, inputs, output):
        pending[0], pending_ptr[0] = 0, None

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, SEModule):
            m.register_forward_hook(se_hook)
        elif isinstance(m, ResidualBlock):
            m.register_forward_pre_hook(block_pre)
            m.register_forward_hook(block_post)
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, r, r))
    return macs, peak


@pytest.mark.parametrize("width_mult", [1.0, 1.2])
def test_counts_match_torch_hooks(width_mult):
    supernet = OFAMobileNetV3(width_mult=width_mult)
    archs = [largest_arch(224), smallest_arch(128)] + sample_batch(np.random.default_rng(7), 8).to_archs()
    for arch in archs:
        supernet.set_active_arch(arch)
        sub = supernet.get_active_subnet()
        stats = arch_stats(arch, width_mult)
        macs, peak = hook_counts(sub, arch.r)
        assert stats.params == sum(p.numel() for p in sub.parameters()), arch
        assert stats.macs == macs, arch
        assert stats.peak_memory_bytes == 4 * peak, arch


def test_known_values():

    stats = arch_stats(largest_arch(224), 1.0)
    assert stats.params == 7_664_760
    small = arch_stats(smallest_arch(128), 1.0)
    assert small.params == 3_410_792 and small.flops_m < stats.flops_m / 5
    assert sum(s.macs for s in stats.stages) < stats.macs  # stem and head are outside the stages
