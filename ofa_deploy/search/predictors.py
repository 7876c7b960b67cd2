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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.errors import BadInputError
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
            raise BadInputError(f"{self.source}: unknown encoding '{self.encoding}' (this toolkit knows {ENCODING})")
        expected_in = 128
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.ndim != 2 or w.shape[1] != expected_in or b.shape != (w.shape[0],):
                raise BadInputError(
                    f"{self.source}: layer {i} has weight {tuple(w.shape)} / bias {tuple(b.shape)}; "
                    f"expected ({'N'}, {expected_in}) / (N,)"
                )
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
        return float(self.predict_batch(ArchBatch.from_archs([arch]))[0])

    def save(self, path: str | Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)} | {f"b{i}": b for i, b in enumerate(self.biases)}
        header = {"format": FORMAT, "encoding": self.encoding, "layers": len(self.weights), **self.meta}
        with open(path, "wb") as f:
            np.savez(f, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)


def load_official(path: str | Path) -> MLPPredictor:
    """The official ``acc_predictor.pth`` (torch state_dict, keys 0./2./4./6.)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise BadInputError(f"{path}: not a readable accuracy predictor ({str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    indices = sorted({int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit()})
    try:
        weights = [state[f"{i}.weight"].float().numpy() for i in indices]
        biases = [state[f"{i}.bias"].float().numpy() for i in indices]
    except (KeyError, AttributeError):
        raise BadInputError(f"{path}: expected an MLP state_dict with keys like '0.weight', '0.bias'") from None
    if not weights:
        raise BadInputError(f"{path}: no MLP layers found (keys {sorted(state)[:4]})")
    return MLPPredictor(weights, biases, meta={"origin": "official OFA tutorial predictor"}, source=str(path))


def load_accuracy_predictor(path: str | Path) -> MLPPredictor:
    """An official ``.pth`` checkpoint or a toolkit ``.npz`` predictor."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such accuracy predictor file")
    if path.suffix != ".npz":
        return load_official(path)
    try:
        data = np.load(path, allow_pickle=False)
        header = json.loads(bytes(data["header"]).decode())
        n = int(header["layers"])
        weights = [data[f"w{i}"] for i in range(n)]
        biases = [data[f"b{i}"] for i in range(n)]
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{path}: not a readable ofa-deploy accuracy predictor ({exc})") from None
    if header.get("format") != FORMAT:
        raise BadInputError(f"{path}: unknown predictor format {header.get('format')!r}")
    meta = {k: v for k, v in header.items() if k not in ("format", "encoding", "layers")}
    return MLPPredictor(weights, biases, encoding=header.get("encoding", ""), meta=meta, source=str(path))


# ---------------------------------------------------------------------- datasets and training


def load_dataset(path: str | Path) -> tuple[list[Arch], np.ndarray]:
    """[arch, accuracy] records from CSV or JSONL: arch fields (ks, e, d, r) plus ``accuracy``.

    In CSV, list fields are JSON (``"[3,5,7,...]"``) or space/semicolon separated. Accuracies
    above 1 are read as percentages.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such dataset file")
    records: list[dict[str, Any]] = []
    text = path.read_text()
    if path.suffix in (".jsonl", ".ndjson") or text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BadInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    else:
        for row in csv.DictReader(text.splitlines()):
            records.append({k: _csv_value(v) for k, v in row.items()})
    archs, accs = [], []
    for n, record in enumerate(records, 1):
        if "accuracy" not in record:
            raise BadInputError(f"{path}: record {n} has no 'accuracy'")
        archs.append(Arch.from_dict(record, source=f"{path} record {n}"))
        try:
            accs.append(float(record["accuracy"]))
        except (TypeError, ValueError):
            raise BadInputError(f"{path}: record {n} has a non-numeric accuracy {record['accuracy']!r}") from None
    if len(archs) < 10:
        raise BadInputError(f"{path}: {len(archs)} records; at least 10 are needed to train and hold some out")
    acc = np.asarray(accs, dtype=np.float32)
    if acc.max() > 1.0:
        acc = acc / 100.0
    return archs, acc


def _csv_value(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    parts = text.replace(";", " ").split()
    if len(parts) > 1:
        return [int(p) for p in parts]
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
