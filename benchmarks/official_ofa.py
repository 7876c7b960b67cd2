"""Load the official OFA tutorial search (``pip install --no-deps ofa``) on local data, for comparison.

The PyPI package imports torchvision (for its ImageNet helpers) and gdown (for downloads) when
the package is imported, and its LatencyEstimator downloads tables and calls ``yaml.load``
without a Loader (an error on PyYAML 6). So: stand-in ``torchvision`` and ``gdown`` modules satisfy
the imports, and the official estimator objects are filled with the local Note10 tables; their
query/prediction code and the EvolutionFinder run as published.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path

import yaml

STAND_INS = ("torchvision", "gdown")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of the stand-in packages with empty packages whose attributes are inert
    placeholders: the official search code never calls them."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in STAND_INS:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda name: type(name, (), {"__init__": lambda self, *a, **k: None})
        return module

    def exec_module(self, module):
        return None


def _stand_in_torchvision() -> None:
    if not any(isinstance(f, _StandInFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _StandInFinder())


def official_modules():
    _stand_in_torchvision()
    try:
        from ofa.tutorial import accuracy_predictor, evolution_finder, latency_table
    except ImportError as exc:
        raise SystemExit(
            f"the official OFA package is needed for this benchmark ({exc}): "
            "pip install --no-deps ofa==0.1.0.post202307202001"
        ) from None
    return accuracy_predictor, evolution_finder, latency_table


def official_latency_table(note10_dir: Path, resolutions=(160, 176, 192, 208, 224)):
    _, _, latency_table = official_modules()
    table = latency_table.LatencyTable.__new__(latency_table.LatencyTable)
    table.latency_tables = {}
    for r in resolutions:
        estimator = latency_table.LatencyEstimator.__new__(latency_table.LatencyEstimator)
        estimator.lut = yaml.safe_load((note10_dir / f"{r}_lookup_table.yaml").read_text())
        table.latency_tables[r] = estimator
    return table


def official_accuracy_predictor(checkpoint: Path):
    import torch

    accuracy_predictor, _, _ = official_modules()
    predictor = accuracy_predictor.AccuracyPredictor(pretrained=False, device="cpu")
    predictor.model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return predictor


def official_finder(note10_dir: Path, checkpoint: Path, budget_ms: float, **kwargs):
    _, evolution_finder, _ = official_modules()
    return evolution_finder.EvolutionFinder(
        constraint_type="note10",
        efficiency_constraint=budget_ms,
        efficiency_predictor=official_latency_table(note10_dir),
        accuracy_predictor=official_accuracy_predictor(checkpoint),
        **kwargs,
    )
