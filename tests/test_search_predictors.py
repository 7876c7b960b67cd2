"""Accuracy predictors (ofa_deploy/search/predictors.py):
the official predictor's encoding and weights, and training one on records."""

import json

import numpy as np
import pytest
import torch

from ofa_deploy.errors import BadInputError
from ofa_deploy.search.predictors import encode, load_accuracy_predictor, load_dataset, train_predictor
from ofa_deploy.space.arch import Arch, ArchBatch, sample_batch

KS_MAP = {3: 0, 5: 1, 7: 2}
E_MAP = {3: 0, 4: 1, 6: 2}


def official_features(arch: Arch) -> list[float]:
    """A line-by-line transcription of the official ``spec2feats`` (the reference being matched)."""
    ks, ex = list(arch.ks), list(arch.e)
    start, end = 0, 4
    for d in arch.d:
        for j in range(start + d, end):
            ks[j] = 0
            ex[j] = 0
        start += 4
        end += 4
    ks_onehot, ex_onehot, r_onehot = [0] * 60, [0] * 60, [0] * 8
    for i in range(20):
        if ks[i] != 0:
            ks_onehot[i * 3 + KS_MAP[ks[i]]] = 1
        if ex[i] != 0:
            ex_onehot[i * 3 + E_MAP[ex[i]]] = 1
    r_onehot[(arch.r - 112) // 16] = 1
    return ks_onehot + ex_onehot + r_onehot


@pytest.fixture(scope="module")
def official(reference_dir):
    return load_accuracy_predictor(reference_dir / "acc_predictor.pth")


def test_encoding_equals_official():
    batch = sample_batch(np.random.default_rng(0), 300)
    expected = np.array([official_features(a) for a in batch.to_archs()], dtype=np.float32)
    assert np.array_equal(encode(batch), expected)


def test_official_predictor_matches_official_model(official, reference_dir):
    model = torch.nn.Sequential(
        torch.nn.Linear(128, 400),
        torch.nn.ReLU(),
        torch.nn.Linear(400, 400),
        torch.nn.ReLU(),
        torch.nn.Linear(400, 400),
        torch.nn.ReLU(),
        torch.nn.Linear(400, 1),
    )
    model.load_state_dict(torch.load(reference_dir / "acc_predictor.pth", map_location="cpu", weights_only=True))
    batch = sample_batch(np.random.default_rng(1), 50)
    with torch.no_grad():
        expected = model(torch.tensor([official_features(a) for a in batch.to_archs()], dtype=torch.float32))[:, 0]
    got = official.predict_batch(batch)
    assert np.abs(got - expected.numpy()).max() < 1e-5
    assert got.min() > 0.6 and got.max() < 0.9  # top-1 in 0..1


def test_tutorial_arch_value(official):
    arch = Arch.from_dict(
        {
            "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
            "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
            "d": [2, 2, 3, 4, 3],
            "r": 192,
        }
    )
    assert official.predict(arch) == pytest.approx(0.81713, abs=1e-4)
    assert official.predict_batch(ArchBatch.from_archs([arch] * 3)).shape == (3,)


def synthetic_dataset(n: int, seed: int = 0):
    """Accuracy that depends on the arch in a learnable way (more capacity, higher accuracy)."""
    batch = sample_batch(np.random.default_rng(seed), n)
    feats = encode(batch)
    weights = np.random.default_rng(99).uniform(0, 1, feats.shape[1]).astype(np.float32)
    acc = 0.70 + 0.1 * (feats @ weights) / (feats @ weights).max()
    return batch.to_archs(), acc.astype(np.float32)


def test_train_save_load_round_trip(tmp_path):
    archs, acc = synthetic_dataset(400)
    predictor, metrics = train_predictor(archs, acc, hidden=(64, 64), epochs=60)
    assert metrics["kendall_tau"] > 0.7 and metrics["rmse"] < 0.01
    path = tmp_path / "pred.npz"
    predictor.save(path)
    again = load_accuracy_predictor(path)
    batch = ArchBatch.from_archs(archs[:20])
    assert np.allclose(again.predict_batch(batch), predictor.predict_batch(batch))
    assert again.meta["kendall_tau"] == pytest.approx(metrics["kendall_tau"])
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickles
        assert json.loads(bytes(data["header"]).decode())["encoding"] == "ofa-onehot-128"


def test_dataset_formats(tmp_path):
    archs, acc = synthetic_dataset(12)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({**a.to_dict(), "accuracy": float(x) * 100}) for a, x in zip(archs, acc)))
    got_archs, got_acc = load_dataset(jsonl)
    assert got_archs == archs and np.allclose(got_acc, acc, atol=1e-5)  # percentages scaled to 0..1
    csv_path = tmp_path / "d.csv"
    lines = ["ks,e,d,r,accuracy"] + [
        f'"{json.dumps(list(a.ks))}","{" ".join(map(str, a.e))}","{json.dumps(list(a.d))}",{a.r},{x}'
        for a, x in zip(archs, acc)
    ]
    csv_path.write_text("\n".join(lines))
    got_archs, got_acc = load_dataset(csv_path)
    assert got_archs == archs and np.allclose(got_acc, acc, atol=1e-5)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"ks": [3]}\n', "has no 'accuracy'"),
        ('{"ks": [3], "e": [3], "d": [2], "r": 160, "accuracy": 0.7}\n', "'ks' must have 20 entries"),
        ("", "at least 10"),
        ("not json\n{", "not valid JSON"),
    ],
)
def test_bad_datasets(tmp_path, content, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BadInputError, match=words):
        load_dataset(path)


def test_bad_predictor_files(tmp_path):
    bad = tmp_path / "p.pth"
    bad.write_bytes(b"junk")
    with pytest.raises(BadInputError, match="not a readable accuracy predictor"):
        load_accuracy_predictor(bad)
    wrong = tmp_path / "w.pth"
    torch.save({"0.weight": torch.zeros(10, 64), "0.bias": torch.zeros(10)}, wrong)
    with pytest.raises(BadInputError, match="expected"):
        load_accuracy_predictor(wrong)
    with pytest.raises(BadInputError, match="no such"):
        load_accuracy_predictor(tmp_path / "none.npz")


def test_train_predictor_cli_then_search_with_it(tmp_path, capsys, reference_dir):
    from ofa_deploy.cli.main import main

    archs, acc = synthetic_dataset(300, seed=3)
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({**a.to_dict(), "accuracy": float(x)}) for a, x in zip(archs, acc)))
    out = tmp_path / "mine.npz"
    assert (
        main(
            ["train-predictor", "--data", str(data), "--out", str(out), "--hidden", "64,64", "--epochs", "40", "--json"]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["held_out_samples"] == 60 and metrics["kendall_tau"] > 0.6
    best = tmp_path / "best.json"
    assert (
        main(
            [
                "search",
                "--lut",
                str(reference_dir / "note10"),
                "--latency-ms",
                "25",
                "--accuracy-predictor",
                str(out),
                "--population",
                "30",
                "--generations",
                "10",
                "--out",
                str(best),
                "--json",
            ]
        )
        == 0
    )
    assert 0.6 < json.loads(capsys.readouterr().out)["accuracy"] < 0.9


def test_train_predictor_cli_bad_inputs(tmp_path, capsys):
    from ofa_deploy.cli.main import main

    assert main(["train-predictor", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "p.npz")]) == 2
    assert "no such dataset" in capsys.readouterr().err
    assert main(["train-predictor", "--data", "x", "--out", str(tmp_path / "p.pth")]) == 2
    assert ".npz" in capsys.readouterr().err
