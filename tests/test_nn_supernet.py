"""The supernet (ofa_deploy/nn/supernet.py):
official checkpoints load, extracted sub-networks match it, BN recalibration."""

import numpy as np
import pytest
import torch
from conftest import randomize_

from ofa_deploy.errors import CheckpointMismatchError
from ofa_deploy.nn.bn_calibration import recalibrate_bn
from ofa_deploy.nn.mobilenet_v3 import MobileNetV3
from ofa_deploy.nn.supernet import OFAMobileNetV3, load_supernet, normalise_checkpoint
from ofa_deploy.space.arch import largest_arch, sample_batch, smallest_arch


@pytest.fixture(scope="module", params=[1.0, 1.2])
def supernet(request):
    torch.manual_seed(0)
    return randomize_(OFAMobileNetV3(width_mult=request.param), seed=int(request.param * 10)).eval()


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_official():
    w10 = OFAMobileNetV3(width_mult=1.0)
    assert count(w10) == 7_678_880
    assert len(w10.state_dict()) == 475
    w12 = OFAMobileNetV3(width_mult=1.2)
    assert count(w12) == 10_715_752
    assert len(w12.state_dict()) == 475
    w10.set_max_net()
    assert count(w10.get_active_subnet()) == 7_664_760
    w10.set_min_net()
    assert count(w10.get_active_subnet()) == 3_410_792


def test_official_key_names():
    keys = set(OFAMobileNetV3().state_dict())
    for key in (
        "first_conv.conv.weight",
        "blocks.0.conv.depth_conv.conv.weight",
        "blocks.1.conv.inverted_bottleneck.conv.conv.weight",
        "blocks.1.conv.depth_conv.conv.7to5_matrix",
        "blocks.1.conv.depth_conv.conv.5to3_matrix",
        "blocks.1.conv.depth_conv.bn.bn.running_var",
        "blocks.17.conv.depth_conv.se.fc.reduce.weight",
        "final_expand_layer.conv.weight",
        "feature_mix_layer.conv.weight",
        "classifier.linear.weight",
    ):
        assert key in keys, key


def test_extracted_subnet_matches_supernet(supernet):
    """50 random archs per width: static extraction == supernet with the arch active."""
    rng = np.random.default_rng(int(supernet.width_mult * 100))
    worst = 0.0
    for arch in sample_batch(rng, 50).to_archs():
        supernet.set_active_arch(arch)
        x = torch.randn(2, 3, arch.r, arch.r, generator=torch.Generator().manual_seed(arch.r))
        with torch.no_grad():
            expected = supernet(x)
            subnet = supernet.get_active_subnet().eval()
            got = subnet(x)
        assert isinstance(subnet, MobileNetV3)
        assert got.shape == (2, 1000)
        worst = max(worst, (got - expected).abs().max().item())
    assert worst <= 1e-5
    assert expected.abs().max() > 1e-2  # the outputs are not trivially tiny


def test_kernel_transform_is_used(supernet):
    """A 3x3 sub-kernel is not the plain centre crop once the matrices are trained."""
    supernet.set_active_subnet(ks=3, e=6, d=4)
    sub = supernet.get_active_subnet()
    crop = supernet.blocks[1].conv.depth_conv.conv.conv.weight[:, :, 2:5, 2:5]
    got = sub.blocks[1].conv.depth_conv.conv.weight
    assert got.shape == crop.shape and not torch.allclose(got, crop)
    supernet.set_active_subnet(ks=7)
    sub = supernet.get_active_subnet()
    assert torch.equal(sub.blocks[1].conv.depth_conv.conv.weight, supernet.blocks[1].conv.depth_conv.conv.conv.weight)


def test_extracted_weights_are_copies(supernet):
    supernet.set_max_net()
    sub = supernet.get_active_subnet()
    sub.first_conv.conv.weight.data.add_(1.0)
    assert not torch.equal(sub.first_conv.conv.weight, supernet.first_conv.conv.weight)


def test_checkpoint_round_trip_and_variants(tmp_path, supernet):
    state = supernet.state_dict()
    fresh = OFAMobileNetV3(width_mult=supernet.width_mult)
    fresh.load_state_dict({"state_dict": state})
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    old_names = {k.replace("blocks.3.conv.", "blocks.3.mobile_inverted_conv."): v for k, v in state.items()}
    assert any(".mobile_inverted_conv." in k for k in old_names)
    fresh2 = OFAMobileNetV3(width_mult=supernet.width_mult)
    fresh2.load_state_dict(old_names)
    assert torch.equal(
        fresh2.blocks[3].conv.point_linear.conv.conv.weight, supernet.blocks[3].conv.point_linear.conv.conv.weight
    )
    path = tmp_path / "ofa.pth"
    torch.save({"state_dict": state}, path)
    loaded = load_supernet(path)
    assert loaded.width_mult == supernet.width_mult
    assert not loaded.training


def test_checkpoint_mismatch_names_keys(tmp_path):
    state = OFAMobileNetV3().state_dict()
    broken = dict(state)
    del broken["blocks.5.conv.depth_conv.bn.bn.weight"]
    broken["blocks.5.conv.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as info:
        OFAMobileNetV3().load_state_dict(broken)
    message = str(info.value)
    assert "blocks.5.conv.depth_conv.bn.bn.weight" in message and "blocks.5.conv.extra.weight" in message
    with pytest.raises(CheckpointMismatchError, match="wrong width multiplier"):
        OFAMobileNetV3(width_mult=1.2).load_state_dict(state)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a readable torch checkpoint"):
        load_supernet(garbage)


def test_normalise_strips_dataparallel_prefix():
    out = normalise_checkpoint({"module.blocks.1.mobile_inverted_conv.x": 1})
    assert out == {"blocks.1.conv.x": 1}


def test_channel_sorting_preserves_function_and_sorts():
    torch.manual_seed(1)
    net = randomize_(OFAMobileNetV3(), seed=5).eval()
    net.set_max_net()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        before = net(x)
        net.re_organize_middle_weights()
        after = net(x)
    assert (before - after).abs().max() < 1e-4
    importance = net.blocks[6].conv.point_linear.conv.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
    # a smaller expand ratio now keeps the most important channels
    block = net.blocks[6].conv
    mid = block.inverted_bottleneck.conv.conv.weight.shape[0]
    assert importance[: mid // 2].sum() >= importance[mid // 2 :].sum()


def test_channel_sorting_with_expand_stage_keeps_wide_channels_in_front():
    torch.manual_seed(2)
    net = randomize_(OFAMobileNetV3(), seed=6)
    block = net.blocks[2].conv
    in_c = block.in_channels
    importance = torch.zeros(in_c * 6)
    importance[in_c * 4 :] = 1000.0  # the most important channels sit beyond the e=4 width
    with torch.no_grad():
        block.point_linear.conv.conv.weight.mul_(0).add_(importance[None, :, None, None] + 1e-3)
    block.re_organize_middle_weights(expand_ratio_stage=1)
    sorted_imp = block.point_linear.conv.conv.weight.abs().sum(dim=(0, 2, 3))
    # stage 1 ranks the channels inside the e=4 width first, so the heavy ones cannot move to the front
    assert sorted_imp[: in_c * 4].max() < 1.0


def test_bn_recalibration_uses_active_channels():
    torch.manual_seed(3)
    net = randomize_(OFAMobileNetV3(), seed=7)
    arch = smallest_arch(r=128)
    net.set_active_arch(arch)
    batches = [torch.randn(4, 3, 128, 128) * 2 + 1 for _ in range(3)]
    untouched = net.blocks[1].conv.inverted_bottleneck.bn.bn.running_mean.clone()
    seen = recalibrate_bn(net, batches)
    assert seen == 12
    # first conv BN: mean of the conv outputs over all batches
    conv = net.first_conv.conv
    with torch.no_grad():
        outs = torch.cat([conv(b) for b in batches])
    expected_mean = outs.mean(dim=(0, 2, 3))
    assert torch.allclose(net.first_conv.bn.running_mean, expected_mean, atol=1e-4)
    new = net.blocks[1].conv.inverted_bottleneck.bn.bn.running_mean
    active = net.blocks[1].conv.active_middle_channels(net.blocks[1].conv.in_channels)
    assert not torch.allclose(new[:active], untouched[:active])
    assert torch.equal(new[active:], untouched[active:])  # inactive channels keep their statistics
    # recalibrating the extracted static network gives the same statistics
    sub = net.get_active_subnet()
    recalibrate_bn(sub, batches)
    super_var = net.blocks[1].conv.inverted_bottleneck.bn.bn.running_var[:active]
    assert torch.allclose(sub.blocks[1].conv.inverted_bottleneck.bn.running_var, super_var, atol=1e-4)


def test_largest_subnet_equals_supernet_at_full_size():
    torch.manual_seed(4)
    net = randomize_(OFAMobileNetV3(), seed=8).eval()
    arch = largest_arch(r=160)
    net.set_active_arch(arch)
    assert net.active_arch(r=160) == arch
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(net(x), net.get_active_subnet().eval()(x), atol=1e-5)


def test_random_weights_leave_the_callers_random_state_alone():
    from ofa_deploy.nn.extraction import build_subnet

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first, _, weights = build_subnet(smallest_arch(128), seed=1)
    assert weights == "random" and torch.equal(torch.rand(3), expected)
    again, _, _ = build_subnet(smallest_arch(128), seed=1)  # still seeded: the same weights every time
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
