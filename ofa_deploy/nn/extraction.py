"""Sub-network extraction: supernet checkpoint + arch -> static network files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_json, atomic_write_torch
from ofa_deploy.nn.mobilenet_v3 import MobileNetV3, save_net_config
from ofa_deploy.nn.supernet import OFAMobileNetV3, load_supernet
from ofa_deploy.space.arch import Arch

NET_CONFIG_FILE = "net.config"
STATE_DICT_FILE = "weights.pth"
ARCH_FILE = "arch.json"


@dataclass
class ExtractionResult:
    """What :func:`extract_subnet` wrote: the network, its width, where its weights came from, and the two files."""

    net: MobileNetV3
    width_mult: float
    weights: str  # "checkpoint" or "random"
    net_config_path: Path
    state_dict_path: Path


def build_subnet(
    arch: Arch, supernet_path: str | Path | None = None, width_mult: float | None = None, seed: int = 0
) -> tuple[MobileNetV3, float, str]:
    """The static sub-network for ``arch``: weights from a checkpoint, or random (seeded) without one.
    The caller's random state is left as it was (building modules draws from torch's generator)."""
    with torch.random.fork_rng(devices=[]):
        if supernet_path is not None:
            supernet = load_supernet(supernet_path, width_mult)
            weights = "checkpoint"
        else:
            torch.manual_seed(seed)
            supernet = OFAMobileNetV3(width_mult=1.0 if width_mult is None else width_mult)
            weights = "random"
        supernet.set_active_arch(arch)
        return supernet.get_active_subnet().eval(), supernet.width_mult, weights


def extract_subnet(
    arch: Arch, out_dir: Path, supernet_path: str | Path | None = None, width_mult: float | None = None
) -> ExtractionResult:
    """Write the sub-network's ``net.config``, ``weights.pth`` and ``arch.json`` into ``out_dir``."""
    net, w, weights = build_subnet(arch, supernet_path, width_mult)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{out_dir}: cannot create output directory ({exc.strerror})") from None
    config_path, weights_path = out_dir / NET_CONFIG_FILE, out_dir / STATE_DICT_FILE
    save_net_config(net, config_path)
    atomic_write_torch(weights_path, net.state_dict())
    atomic_write_json(out_dir / ARCH_FILE, {**arch.to_dict(), "width_mult": w}, indent=2)
    return ExtractionResult(net, w, weights, config_path, weights_path)
