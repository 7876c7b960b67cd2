"""Accuracy predictors: the official OFA MLP, and MLPs the toolkit trains from [arch, accuracy] data.

Encoding (the official one, ``ofa-onehot-128``): 60 kernel one-hots (block i -> slots 3i..3i+2
for k 3/5/7), 60 expand one-hots (e 3/4/6), 8 resolution one-hots at ``(r - 112) // 16``;
inactive blocks are all zero. The official checkpoint (MLP 128-400-400-400-1, keys
``0.*, 2.*, 4.*, 6.*``) predicts top-1 accuracy in 0..1.

Predictors the toolkit trains are saved as ``.npz`` (plain arrays plus a JSON header naming the
encoding, layer sizes and held-out metrics): no pickles, so they load on any future numpy.
Scoring is batched: one call encodes and scores a whole population with matrix products.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_bytes
from ofa_deploy.space.arch import EXPAND_RATIOS, KERNEL_SIZES, N_BLOCKS, Arch, ArchBatch

ENCODING = "ofa-onehot-128"
FORMAT = "ofa-deploy-accuracy-predictor/1"


def encode(batch: ArchBatch) -> np.ndarray:
    """(N, 128) float32 features, exactly as the official ``spec2feats``."""
    n = len(batch)
    feats = np.zeros((n, 2 * 3 * N_BLOCKS + 8), dtype=np.float32)
    active = batch.active_mask()
    rows, slots = np.nonzero(active)
    k_index = np.searchsorted(np.asarray(KERNEL_SIZES), batch.ks[rows, slots])
    e_index = np.searchsorted(np.asarray(EXPAND_RATIOS), batch.e[rows, slots])
    feats[rows, 3 * slots + k_index] = 1.0
    feats[rows, 3 * N_BLOCKS + 3 * slots + e_index] = 1.0
    feats[np.arange(n), 6 * N_BLOCKS + (batch.r - 112) // 16] = 1.0
    return feats


# The OFA tutorial's acc_predictor.pth was trained on sub-networks of ofa_mbv3_d234_e346_k357_w1.2.
OFFICIAL_PREDICTOR_WIDTH = 1.2


@dataclass
class MLPPredictor:
    """ReLU MLP over the encoding; ``weights[i]`` is (out, in) like torch's Linear."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    encoding: str = ENCODING
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.encoding != ENCODING:
            raise BadInputError(f"{self.source}: unknown encoding {self.encoding!r} (this toolkit knows {ENCODING})")
        if not self.weights or len(self.weights) != len(self.biases):
            raise BadInputError(
                f"{self.source}: {len(self.weights)} weight and {len(self.biases)} bias arrays; expected one of each "
                "per layer"
            )
        expected_in = 128
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            w, b = np.asarray(w), np.asarray(b)
            if w.ndim != 2 or w.shape[1] != expected_in or w.shape[0] < 1 or b.shape != (w.shape[0],):
                raise BadInputError(
                    f"{self.source}: layer {i} has weight {tuple(w.shape)} / bias {tuple(b.shape)}; "
                    f"expected ({'N'}, {expected_in}) / (N,)"
                )
            for what, array in (("weight", w), ("bias", b)):
                if array.dtype.kind not in "iuf":
                    raise BadInputError(f"{self.source}: layer {i} {what} holds {array.dtype} values, not real numbers")
            w, b = w.astype(np.float32), b.astype(np.float32)
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise BadInputError(f"{self.source}: layer {i} holds NaN or infinite values (or values beyond float32)")
            self.weights[i], self.biases[i] = w, b
            expected_in = w.shape[0]
        if expected_in != 1:
            raise BadInputError(f"{self.source}: the last layer must have one output, has {expected_in}")

    def predict_features(self, feats: np.ndarray) -> np.ndarray:
        x = feats.astype(np.float32, copy=False)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w.T + b
            if i < len(self.weights) - 1:
                np.maximum(x, 0.0, out=x)
        return x[:, 0]

    def predict_batch(self, batch: ArchBatch) -> np.ndarray:
        """Predicted top-1 accuracy (0..1) of every arch in the batch."""
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.predict_features(encode(batch))

    def predict(self, arch: Arch) -> float:
        """Predicted top-1 accuracy (0..1) of one arch."""
        return float(self.predict_batch(ArchBatch.from_archs([arch]))[0])

    @property
    def width_mult(self) -> float | None:
        """The width multiplier of the sub-networks it was trained on, where its file says (else None)."""
        value = self.meta.get("width_mult")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def precision(self) -> str:
        """The precision the accuracies it learned were measured at (``eval-subnets --precision``; the
        official predictor and older files: fp32)."""
        return str(self.meta.get("precision") or "fp32")

    def save(self, path: str | Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)} | {f"b{i}": b for i, b in enumerate(self.biases)}
        header = {"format": FORMAT, "encoding": self.encoding, "layers": len(self.weights), **self.meta}
        buffer = io.BytesIO()
        np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
        atomic_write_bytes(Path(path), buffer.getvalue())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_official(path: str | Path) -> MLPPredictor:
    """The official ``acc_predictor.pth`` (torch state_dict, keys 0./2./4./6.)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise BadInputError(f"{path}: not a readable accuracy predictor ({_first_line(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    expected = f"{path}: expected an MLP state_dict with keys like '0.weight', '0.bias'"
    if not isinstance(state, dict):
        raise BadInputError(f"{expected}, got {type(state).__name__}")
    prefixes = {k.split(".")[0] for k in state if isinstance(k, str)}
    indices = sorted(int(p) for p in prefixes if re.fullmatch(r"[0-9]{1,9}", p))
    tensors = [(state.get(f"{i}.weight"), state.get(f"{i}.bias")) for i in indices]
    if any(not isinstance(t, torch.Tensor) or t.is_complex() for pair in tensors for t in pair):
        raise BadInputError(f"{expected} holding real-valued tensors")
    if not tensors:
        raise BadInputError(f"{path}: no MLP layers found (keys {sorted(map(str, state))[:4]})")
    weights = [w.float().numpy() for w, _ in tensors]
    biases = [b.float().numpy() for _, b in tensors]
    meta = {"origin": "official OFA tutorial predictor", "width_mult": OFFICIAL_PREDICTOR_WIDTH}
    return MLPPredictor(weights, biases, meta=meta, source=str(path))


def load_accuracy_predictor(path: str | Path) -> MLPPredictor:
    """An official ``.pth`` checkpoint or a toolkit ``.npz`` predictor."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such accuracy predictor file")
    if path.suffix != ".npz":
        return load_official(path)
    unreadable = f"{path}: not a readable ofa-deploy accuracy predictor"
    try:
        with open(path, "rb") as handle:  # ours to close: np.load leaves its own file open when the zip is damaged
            header, weights, biases = _read_npz(handle, path, unreadable)
    except OSError as exc:
        raise BadInputError(f"{unreadable} ({exc})") from None
    meta = {k: v for k, v in header.items() if k not in ("format", "encoding", "layers")}
    return MLPPredictor(weights, biases, encoding=header.get("encoding", ""), meta=meta, source=str(path))


def _read_npz(handle, path: Path, unreadable: str) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """The header and the layer arrays of a toolkit predictor file (BadInputError for anything else)."""
    try:
        data = np.load(handle, allow_pickle=False)
    except Exception as exc:  # numpy, zipfile and zlib raise many types for a damaged file
        raise BadInputError(f"{unreadable} ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise BadInputError(f"{unreadable} (a single array, not an .npz archive)")
    with data:
        try:
            header = json.loads(data["header"].tobytes().decode())
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            if header.get("format") != FORMAT:
                raise BadInputError(f"{path}: unknown predictor format {header.get('format')!r}")
            n = header.get("layers")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(data.files):
                raise ValueError(f"'layers' is {n!r}, not a layer count")
            weights = [data[f"w{i}"] for i in range(n)]
            biases = [data[f"b{i}"] for i in range(n)]
        except BadInputError:
            raise
        except Exception as exc:  # a missing or damaged array, a header that is not JSON
            raise BadInputError(f"{unreadable} ({type(exc).__name__}: {_first_line(exc)})") from None
    return header, weights, biases


# ---------------------------------------------------------------------- datasets and training


def load_dataset(path: str | Path) -> tuple[list[Arch], np.ndarray]:
    """[arch, accuracy] records from CSV or JSONL: arch fields (ks, e, d, r) plus ``accuracy``.

    In CSV, list fields are JSON (``"[3,5,7,...]"``) or space/semicolon separated. Accuracies
    above 1 are read as percentages.
    """
    archs, acc, _ = load_dataset_with_precision(path)
    return archs, acc


def load_dataset_with_precision(path: str | Path) -> tuple[list[Arch], np.ndarray, str]:
    """:func:`load_dataset` and the precision the accuracies were measured at: the records' ``precision``
    (``eval-subnets --precision int8`` writes it), fp32 where none says; a file mixing them is refused."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such dataset file")
    records: list[Any] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the dataset ({exc})") from None
    if path.suffix in (".jsonl", ".ndjson") or text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BadInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
                except (ValueError, RecursionError) as exc:  # a 4300-digit integer, nesting too deep
                    raise BadInputError(f"{path}:{n}: not readable JSON ({type(exc).__name__})") from None
    else:
        try:
            rows = list(csv.DictReader(text.splitlines()))
        except csv.Error as exc:
            raise BadInputError(f"{path}: not readable CSV ({exc})") from None
        for n, row in enumerate(rows, 2):  # line 1 is the header
            if None in row or None in row.values():
                raise BadInputError(f"{path}:{n}: the row does not have the header's {len(row) - (None in row)} fields")
            try:
                records.append({k: _csv_value(v) for k, v in row.items()})
            except ValueError as exc:
                raise BadInputError(f"{path}:{n}: {exc}") from None
    archs, accs, precisions = [], [], set()
    for n, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise BadInputError(f"{path}: record {n} is not an object with arch fields and 'accuracy'")
        precisions.add(str(record.get("precision") or "fp32"))
        if "accuracy" not in record:
            raise BadInputError(f"{path}: record {n} has no 'accuracy'")
        archs.append(Arch.from_dict(record, source=f"{path} record {n}"))
        value = record["accuracy"]
        try:
            if isinstance(value, bool):
                raise TypeError
            accuracy = float(value)
        except (TypeError, ValueError, OverflowError):
            accuracy = math.nan
        if not 0 <= accuracy <= 100:
            raise BadInputError(
                f"{path}: record {n} has accuracy {str(value)[:40]!r}; expected a number from 0 to 1 (or a percentage)"
            )
        accs.append(accuracy)
    if len(archs) < 10:
        raise BadInputError(f"{path}: {len(archs)} records; at least 10 are needed to train and hold some out")
    if len(precisions) > 1:
        raise BadInputError(f"{path}: mixes accuracies of precisions {sorted(precisions)}; train on one of them")
    acc = np.asarray(accs, dtype=np.float32)
    if acc.max() > 1.0:
        acc = acc / 100.0
    return archs, acc, precisions.pop()


def _csv_value(text: str) -> Any:
    """A CSV cell: a JSON list, a space/semicolon separated list of integers, a number or text (ValueError)."""
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{text[:40]!r} is not a JSON list ({type(exc).__name__})") from None
    parts = text.replace(";", " ").split()
    if len(parts) > 1:
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a list of integers") from None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def train_predictor(
    archs: list[Arch],
    accuracy: np.ndarray,
    hidden: tuple[int, ...] = (400, 400, 400),
    epochs: int = 300,
    held_out: float = 0.2,
    seed: int = 0,
    lr: float = 1e-3,
) -> tuple[MLPPredictor, dict[str, float]]:
    """Fit an MLP on the encoding; returns it with held-out RMSE and Kendall tau."""
    import torch

    from ofa_deploy.metrics import kendall_tau, rmse

    feats = encode(ArchBatch.from_archs(archs))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(archs))
    n_test = max(1, int(round(held_out * len(archs))))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    sizes = (feats.shape[1], *hidden, 1)
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    # Train on standardised targets (accuracies differ by fractions of a percent), then fold the
    # scale back into the last layer so the saved MLP predicts accuracy directly.
    mean, std = float(accuracy[train].mean()), float(accuracy[train].std()) or 1.0
    x = torch.from_numpy(feats[train])
    y = torch.from_numpy(((accuracy[train] - mean) / std).astype(np.float32))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    batch = 128
    for _ in range(epochs):
        perm = torch.randperm(len(train))
        for start in range(0, len(train), batch):
            idx = perm[start : start + batch]
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[idx])[:, 0], y[idx])
            loss.backward()
            optimiser.step()
        scheduler.step()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach().numpy().copy() for m in linears]
    biases = [m.bias.detach().numpy().copy() for m in linears]
    weights[-1] *= std
    biases[-1] = biases[-1] * std + mean
    predictor = MLPPredictor(weights, biases)
    predicted = predictor.predict_features(feats[test])
    metrics = {
        "train_samples": int(len(train)),
        "held_out_samples": int(len(test)),
        "rmse": rmse(predicted, accuracy[test]),
        "kendall_tau": kendall_tau(predicted, accuracy[test]),
    }
    predictor.meta = {"origin": "trained by ofa-deploy", "hidden": list(hidden), "epochs": epochs, **metrics}
    return predictor, metrics
