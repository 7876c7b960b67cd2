"""``eval-subnets``: accuracy records for sampled sub-networks that ``train-predictor`` reads, and a
supernet with its own class count that ``compile --supernet`` turns into a bundle."""

from __future__ import annotations

import json

import pytest
import torch

from ofa_deploy.cli.main import main
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.search.predictors import load_accuracy_predictor
from ofa_deploy.space.arch import Arch, largest_arch, smallest_arch
from ofa_deploy.train.checkpoint import TrainingDirectory

pytest.importorskip("sklearn", reason="--dataset digits needs scikit-learn (the 'train' extra)")


@pytest.fixture(scope="module")
def digits_supernet(tmp_path_factory):
    """A 10-class supernet written the way `train` writes one (weights, supernet.json)."""
    root = tmp_path_factory.mktemp("supernet")
    torch.manual_seed(0)
    TrainingDirectory(root).save_phase(
        "full", OFAMobileNetV3(n_classes=10), {"dataset": "digits", "n_classes": 10, "resolutions": [128, 160]}
    )
    return root / "supernet.pth"


@pytest.fixture(scope="module")
def records(digits_supernet, tmp_path_factory):
    out = tmp_path_factory.mktemp("acc") / "acc.jsonl"
    argv = ["eval-subnets", "--supernet", str(digits_supernet), "--dataset", "digits", "--samples", "8"]
    argv += ["--calib-images", "32", "--out", str(out), "--json", "--no-progress"]
    return out, argv


def test_json_lists_arch_records_with_accuracy(records, capsys):
    out, argv = records
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed, list) and len(printed) == 10  # 8 sampled + largest + smallest
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == printed
    archs = [Arch.from_dict(r) for r in printed]
    assert archs[0] == largest_arch(160) and archs[1] == smallest_arch(128)
    assert len(set(archs)) == 10 and {a.r for a in archs} <= {128, 160}  # the resolutions it was trained at
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in printed)

    predictor = out.with_name("predictor.npz")
    assert main(["train-predictor", "--data", str(out), "--out", str(predictor), "--epochs", "5", "--hidden", "8"]) == 0
    assert predictor.stat().st_size > 0


def test_int8_records_hold_the_accuracy_after_quantization(records, tmp_path, capsys):
    _, argv = records
    out = tmp_path / "int8.jsonl"
    argv = [*argv[: argv.index("--samples")], "--samples", "4", "--calib-images", "32", "--out", str(out)]
    assert main([*argv, "--precision", "int8", "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 6 and {r["precision"] for r in printed} == {"int8"}  # 4 sampled + largest + smallest
    assert all(0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["accuracy_fp32"] <= 1.0 for r in printed)
    assert [json.loads(line) for line in out.read_text().splitlines()] == printed


def test_int8_records_train_an_int8_predictor_that_search_sets_against_the_tables(
    records, reference_dir, tmp_path, capsys
):
    out, argv = records
    if not out.exists():
        assert main(argv) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    int8 = tmp_path / "int8.jsonl"  # as `eval-subnets --precision int8` writes them
    int8.write_text(
        "".join(json.dumps({**r, "precision": "int8", "accuracy_fp32": r["accuracy"]}) + "\n" for r in lines)
    )
    predictor = tmp_path / "int8.npz"
    assert (
        main(["train-predictor", "--data", str(int8), "--out", str(predictor), "--epochs", "5", "--hidden", "8"]) == 0
    )
    assert load_accuracy_predictor(predictor).precision == "int8"
    # a file that mixes precisions would teach the predictor two things at once
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(json.dumps({**r, "precision": ("int8", "fp32")[i % 2]}) + "\n" for i, r in enumerate(lines))
    )
    capsys.readouterr()
    assert main(["train-predictor", "--data", str(mixed), "--out", str(tmp_path / "m.npz")]) == 2
    assert "mixes accuracies of precisions ['fp32', 'int8']" in capsys.readouterr().err
    # searching the float Note10 tables with it says the accuracies are another precision's
    search = ["search", "--lut", str(reference_dir / "note10"), "--latency-ms", "30"]
    search += ["--accuracy-predictor", str(predictor), "--generations", "2", "--population", "10"]
    assert main([*search, "--out", str(tmp_path / "b.json")]) == 0
    assert "learned int8 accuracies but the tables are fp32" in capsys.readouterr().err


@pytest.mark.slow
def test_compile_builds_a_bundle_from_a_ten_class_supernet(digits_supernet, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(128).to_dict()))
    bundle = tmp_path / "bundle"
    argv = ["compile", "--arch", str(arch), "--backend", "onnxruntime", "--supernet", str(digits_supernet)]
    assert main([*argv, "--out", str(bundle), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["weights"] == "checkpoint" and manifest["verification"]["passed"] is True
    assert manifest["artifact"]["output"]["shape"] == [1, 10]


def test_class_count_mismatch_is_bad_input(tmp_path, capsys):
    official_shape = tmp_path / "supernet.pth"
    torch.save(OFAMobileNetV3().state_dict(), official_shape)  # 1000 classes
    argv = ["eval-subnets", "--supernet", str(official_shape), "--dataset", "digits", "--samples", "4"]
    assert main([*argv, "--out", str(tmp_path / "acc.jsonl")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "1000 classes" in err
    assert not (tmp_path / "acc.jsonl").exists()
