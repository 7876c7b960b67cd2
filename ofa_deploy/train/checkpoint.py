"""Training checkpoints in ``--out DIR``, every file written atomically.

* ``supernet.pth``: the supernet's plain ``state_dict`` in the official OFA layout (loads in the
  official ``OFAMobileNetV3(n_classes=...)``, in ``compile --supernet`` and ``extract``), updated
  after every completed phase; ``supernet.json`` beside it says what it was trained on.
* ``phases/<phase>.pth``: the same layout at the end of each phase (``phases/full.pth`` is the
  teacher of the later phases).
* ``train_state.pth``: where a killed run continues (``--resume``): weights, optimizer state, the
  phase and the last completed *step*, the completed phases and the settings of the run. The data
  order, resolutions and sub-networks of a step derive from (seed, phase, step), so nothing else is
  needed to continue exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_json, atomic_write_torch

SUPERNET_FILE = "supernet.pth"
SUPERNET_INFO_FILE = "supernet.json"
STATE_FILE = "train_state.pth"
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "train_curves.png"
PHASE_DIR = "phases"
STATE_FORMAT = "ofa-deploy-train-state/1"


def official_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors under the official names (no ``module.`` prefix, cloned to CPU)."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


class TrainingDirectory:
    """The files of one training run in ``--out``: training state, phase checkpoints, supernet, log."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def phase_path(self, phase: str) -> Path:
        return self.root / PHASE_DIR / f"{phase}.pth"

    def has_run(self) -> bool:
        return self.state_path.is_file()

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_write_torch(self.state_path, {"format": STATE_FORMAT, **state})

    def load_state(self) -> dict[str, Any]:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise BadInputError(f"{self.root}: nothing to resume (no {STATE_FILE}); run without --resume") from None
        except Exception as exc:  # torch raises many types for a damaged file
            raise BadInputError(f"{self.state_path}: not a readable training state ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise BadInputError(f"{self.state_path}: not an ofa-deploy training state ({STATE_FORMAT})")
        return state

    def save_phase(self, phase: str, net: torch.nn.Module, info: dict[str, Any]) -> None:
        """The end of a phase: its checkpoint, then ``supernet.pth`` and its description."""
        weights = official_state_dict(net)
        atomic_write_torch(self.phase_path(phase), weights)
        atomic_write_torch(self.root / SUPERNET_FILE, weights)
        atomic_write_json(self.root / SUPERNET_INFO_FILE, info, indent=2)

    def append_log(self, records: list[dict[str, Any]]) -> None:
        """Append JSON lines (a crash may leave a partial last line; readers skip it)."""
        if not records:
            return
        with open(self.root / LOG_FILE, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``train_log.jsonl`` ([] without one); a line that is not JSON (a killed run's) is skipped."""
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the partial last line of a killed run
            continue
    return records


def read_supernet_info(checkpoint: Path) -> dict[str, Any]:
    """``supernet.json`` beside a checkpoint the toolkit trained ({} for official checkpoints)."""
    info = Path(checkpoint).with_name(SUPERNET_INFO_FILE)
    if not info.is_file():
        return {}
    try:
        return json.loads(info.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{info}: not readable JSON ({exc})") from None
