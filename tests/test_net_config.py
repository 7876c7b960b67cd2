"""Official OFA net configs (ofa_deploy/nn/mobilenet_v3.py):
all 50 specialized sub-networks build, run and map to archs."""

import json

import pytest
import torch
from conftest import randomize_

from ofa_deploy.errors import BadInputError
from ofa_deploy.nn.mobilenet_v3 import (
    MobileNetV3,
    arch_of_net_config,
    build_from_net_config,
    load_net_config,
    save_net_config,
)
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.arch import Arch


def official_dirs(reference_dir):
    dirs = sorted((reference_dir / "ofa_specialized").iterdir())
    assert len(dirs) == 50
    return dirs


def test_all_50_official_configs_build_and_run(reference_dir):
    for d in official_dirs(reference_dir):
        net = build_from_net_config(d / "net.config.json").eval()
        r = json.loads((d / "run.config.json").read_text())["image_size"]
        with torch.no_grad():
            out = net(torch.randn(1, 3, r, r))
        assert out.shape == (1, 1000), d.name
        assert torch.isfinite(out).all(), d.name
        # writing the config back and rebuilding gives the same network
        again = build_from_net_config(json.loads(json.dumps(net.config)))
        assert [n for n, _ in again.state_dict().items()] == [n for n, _ in net.state_dict().items()]


def test_official_config_shapes_match_its_name(reference_dir):
    """Spot-check: the note10 8 ms net has its width and depth as in the config."""
    config = load_net_config(
        reference_dir / "ofa_specialized" / "note10_lat-8ms_top1-71.4_finetune-25" / "net.config.json"
    )
    net = MobileNetV3.from_config(config)
    assert len(net.blocks) == len(config["blocks"])
    assert net.first_conv.conv.out_channels == config["first_conv"]["out_channels"]
    assert (
        net.blocks[1].conv.inverted_bottleneck.conv.out_channels
        == config["blocks"][1]["mobile_inverted_conv"]["mid_channels"]
    )


def test_flops_named_configs_match_their_names(reference_dir):
    """The official 'flops-389M' etc. networks: our MAC count of the arch equals the name."""
    from ofa_deploy.space.analytics import arch_stats

    for name, flops in (("flops-389M_top1-79.1_finetune-75", 389), ("flops-482M_top1-79.6_finetune-75", 482)):
        config = load_net_config(reference_dir / "ofa_specialized" / name / "net.config.json")
        arch, width_mult = arch_of_net_config(config, 224)
        assert round(arch_stats(arch, width_mult).flops_m) == flops


def test_extracted_config_round_trip(tmp_path):
    torch.manual_seed(0)
    supernet = randomize_(OFAMobileNetV3(width_mult=1.2), seed=1).eval()
    arch = Arch.from_dict({"ks": [3, 5, 7, 3] * 5, "e": [6, 4, 3, 4] * 5, "d": [2, 3, 4, 3, 2], "r": 160})
    supernet.set_active_arch(arch)
    sub = supernet.get_active_subnet().eval()
    save_net_config(sub, tmp_path / "net.config")
    torch.save(sub.state_dict(), tmp_path / "weights.pth")
    config = json.loads((tmp_path / "net.config").read_text())
    assert config["blocks"][1]["name"] == "ResidualBlock" and config["blocks"][1]["conv"]["name"] == "MBConvLayer"
    assert arch_of_net_config(config, 160) == (arch, 1.2)
    assert json.loads(json.dumps(supernet.get_active_net_config())) == config
    rebuilt = build_from_net_config(tmp_path / "net.config").eval()
    rebuilt.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True))
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), sub(x), atol=1e-6)


def test_old_weight_names_load():
    torch.manual_seed(0)
    sub = OFAMobileNetV3().get_active_subnet()
    old = {k.replace(".conv.inverted", ".mobile_inverted_conv.inverted"): v for k, v in sub.state_dict().items()}
    assert any("mobile_inverted_conv" in k for k in old)
    MobileNetV3.from_config(sub.config).load_state_dict(old)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"name": "ResNet"}', "supported: "),
        ('{"name": "MobileNetV3"}', "missing the key"),
    ],
)
def test_bad_net_configs(tmp_path, text, words):
    path = tmp_path / "net.config"
    path.write_text(text)
    with pytest.raises(BadInputError, match=words):
        build_from_net_config(path)
