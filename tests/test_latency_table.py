"""The latency table (ofa_deploy/latency/table.py):
the official Note10 tables read as the official code reads them, predictions, calibration, missing
keys."""

import json

import numpy as np
import pytest

from ofa_deploy.errors import BadInputError
from ofa_deploy.latency.table import Calibration, LatencyTable, MissingKeyError, load_lut
from ofa_deploy.space.arch import Arch, ArchBatch, sample_batch
from ofa_deploy.space.ops import resolution_ops

TUTORIAL = Arch.from_dict(
    {
        "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
        "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
        "d": [2, 2, 3, 4, 3],
        "r": 192,
    }
)


@pytest.fixture(scope="module")
def note10(reference_dir):
    return load_lut(reference_dir / "note10")


def test_official_tutorial_prediction(note10):
    assert note10.width_mult == 1.2
    assert note10.resolutions == [160, 176, 192, 208, 224]
    assert note10.predict(TUTORIAL) == pytest.approx(24.730, abs=1e-3)
    assert note10.predict_batch(ArchBatch.from_archs([TUTORIAL]))[0] == pytest.approx(24.730, abs=1e-3)


def test_per_resolution_values_are_kept_apart(note10, reference_dir):
    """'Logits-...' is in every official file with a different value; each resolution uses its own."""
    key = "Logits-input:1x1x1536-output:1000"
    assert note10.value(160, key) != note10.value(224, key)
    single = load_lut(reference_dir / "note10" / "192_lookup_table.yaml")
    assert single.resolutions == [192] and single.width_mult == 1.2
    assert single.predict(TUTORIAL) == pytest.approx(note10.predict(TUTORIAL))


def test_batch_prediction_equals_per_arch(note10):
    batch = sample_batch(np.random.default_rng(1), 300, resolutions=note10.resolutions)
    fast = note10.predict_batch(batch)
    slow = [note10.predict(a) for a in batch.to_archs()]
    assert np.allclose(fast, slow, atol=1e-9)


def test_missing_key_names_key_and_command(reference_dir):
    table = load_lut(reference_dir / "note10" / "160_lookup_table.yaml")
    del table.tables[160]["Conv_2-input:1x1x1152-output:1x1x1536"]
    arch = TUTORIAL.with_resolution(160)
    for call in (lambda: table.predict(arch), lambda: table.predict_batch(ArchBatch.from_archs([arch]))):
        with pytest.raises(MissingKeyError) as info:
            call()
        assert "Conv_2-input:1x1x1152-output:1x1x1536" in str(info.value)
        assert "ofa-deploy profile" in str(info.value) and "--resolutions 160" in str(info.value)
    with pytest.raises(BadInputError, match="no entries for resolution 192"):
        table.predict_batch(ArchBatch.from_archs([TUTORIAL]))


def test_toolkit_file_round_trip(tmp_path, note10):
    note10.metadata.device, note10.metadata.backend = "note10", "adb"
    note10.calibration = Calibration(1.1, -0.5, fitted_on=10)
    path = tmp_path / "note10.json"
    note10.save(path)
    again = load_lut(path)
    assert again.resolutions == note10.resolutions and again.width_mult == 1.2
    assert again.calibration.slope == 1.1
    assert again.predict(TUTORIAL) == pytest.approx(1.1 * 24.73016685 - 0.5)
    assert again.predict(TUTORIAL, calibrated=False) == pytest.approx(24.730, abs=1e-3)
    note10.calibration = None


def test_official_files_written_unchanged(tmp_path, reference_dir):
    import yaml

    table = load_lut(reference_dir / "note10")
    table.save_official(tmp_path)
    for r in table.resolutions:
        original = yaml.safe_load((reference_dir / "note10" / f"{r}_lookup_table.yaml").read_text())
        written = yaml.safe_load((tmp_path / f"{r}_lookup_table.yaml").read_text())
        assert written == original


def test_width_mult_inferred_and_overridden(tmp_path):
    entries = {op.key: {"count": 1, "mean": 0.1, "std": 0.0} for op in resolution_ops(160, 1.0)}
    path = tmp_path / "160_lookup_table.yaml"
    import yaml

    path.write_text(yaml.safe_dump(entries))
    assert load_lut(path).width_mult == 1.0
    assert load_lut(path, width_mult=1.2).width_mult == 1.2


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("a.json", "{not json", "not valid JSON"),
        ("b.json", '{"format": "other"}', "not an ofa-deploy latency table"),
        ("c.yaml", "- a\n- b\n", "must map keys"),
        ("d.yaml", "key: [1, 2\n", "valid YAML"),
        ("e.yaml", "Conv-input:160x160x3-output:80x80x16: {count: 1, mean: -1, std: 0}\n", "invalid latency"),
        ("f.yaml", "Conv-input:160x160x3-output:80x80x16: {count: 1, std: 0}\n", "has no 'mean'"),
        (
            "176_lookup_table.yaml",
            "Conv-input:160x160x3-output:80x80x16: {count: 1, mean: 1, std: 0}\n",
            "file name says resolution 176",
        ),
    ],
)
def test_bad_lut_files(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BadInputError, match=words):
        LatencyTable.load(path)


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(BadInputError, match="no such latency table"):
        load_lut(tmp_path / "none.json")
    with pytest.raises(BadInputError, match="lookup_table.yaml"):
        load_lut(tmp_path)


def test_atomic_save_leaves_no_temp_files(tmp_path, note10):
    path = tmp_path / "t.json"
    note10.save(path)
    note10.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    assert json.loads(path.read_text())["format"] == "ofa-deploy-lut/1"
