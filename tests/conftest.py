"""Shared fixtures: the official reference data in ../shared (skipped with a reason where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("OFA_DEPLOY_REFERENCE", REPO.parent / "shared" / "data" / "ofa_reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"official OFA reference data not found at {REFERENCE} (../shared is absent on a user's machine)")
    return REFERENCE


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BN statistic non-trivial random values (not the init defaults)."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if not tensor.dtype.is_floating_point:
            continue
        noise = torch.randn(tensor.shape, generator=gen)
        if name.endswith("running_var"):
            tensor.copy_(0.5 + noise.abs())
        elif name.endswith("_matrix"):
            tensor.copy_(torch.eye(tensor.shape[0]) + 0.1 * noise)
        elif name.endswith(("bn.weight", "bn.bn.weight")):
            tensor.copy_(1.0 + 0.2 * noise)
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
            tensor.copy_(noise / fan_in**0.5 if tensor.dim() > 1 else 0.1 * noise)
    return model
