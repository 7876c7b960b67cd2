"""Inputs are validated once, on load, and numeric flags are bounded before any work starts.

Every failure here is one line naming the file (or flag), the key and the bad value, with exit 2.
The tables are built in the test: the fpga backend's analytical model profiles a complete r160
LUT in about a second with no timing noise, and the JSON is then edited.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from ofa_deploy.cli.main import main
from ofa_deploy.cli.output import print_json
from ofa_deploy.errors import BadInputError
from ofa_deploy.latency.table import LatencyTable, MissingKeyError, load_lut
from ofa_deploy.search.evolution import Objective, SearchConfig, evolutionary_search, latency_constraint
from ofa_deploy.space.arch import save_arch_file, smallest_arch
from ofa_deploy.space.ops import resolution_ops

LOGITS = "Logits-input:1x1x1280-output:1000"  # in every r160 w1.0 sub-network
STAGE2 = "expanded_conv-input:20x20x40"  # every (k, e) of stage 2's later slots at r160 w1.0


def strict_json(text: str):
    """What every --json output must be: JSON a strict parser accepts (no NaN or Infinity)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c} in --json output"))


def cli(capsys, *args: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


@pytest.fixture(scope="module")
def lut(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lut") / "dpu.json"
    code = main(
        ["profile", "--backend", "fpga", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(out)]
        + ["--no-progress"]
    )
    assert code == 0
    return out


def edited(lut: Path, target: Path, change) -> Path:
    """A copy of ``lut`` at ``target`` with ``change(document)`` applied (NaN/Infinity written as JSON allows)."""
    doc = json.loads(lut.read_text())
    change(doc)
    target.write_text(json.dumps(doc))
    return target


def set_record(field: str, value, key: str = LOGITS):
    def change(doc):
        doc["entries"]["160"][key][field] = value

    return change


@pytest.fixture
def arch_file(tmp_path) -> Path:
    path = tmp_path / "arch.json"
    save_arch_file(path, smallest_arch(160))
    return path


# ---------------------------------------------------------------------- LUT values, on load


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("estimate", math.nan),
        ("estimate", math.inf),
        ("estimate", -0.25),
        ("estimate", "1.0"),
        ("mean", -1.0),
        ("mean", math.nan),
        ("median", math.inf),
        ("raw_estimate", -2.0),
        ("std", -0.5),
        ("std", math.nan),
        ("count", -1),
        ("count", 2.5),
    ],
)
def test_toolkit_lut_with_a_bad_value_is_refused(lut, tmp_path, capsys, arch_file, field, value):
    bad = edited(lut, tmp_path / "bad.json", set_record(field, value))
    with pytest.raises(BadInputError) as info:
        load_lut(bad)
    message = str(info.value)
    assert "\n" not in message
    assert str(bad) in message and LOGITS in message and f"{field}={value!r}" in message
    code, out, err = cli(capsys, "predict", "--lut", bad, "--arch", arch_file)
    assert code == 2 and out == "" and len(err) == 1 and f"{field}={value!r}" in err[0]


def test_zero_latency_entries_are_allowed(lut, tmp_path):
    """Overhead-subtracted entries of the toolkit's own tables can be exactly 0."""
    ok = edited(lut, tmp_path / "zero.json", set_record("estimate", 0.0))
    assert load_lut(ok).value(160, LOGITS) == 0.0


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_call_overhead_is_refused(lut, tmp_path, value):
    def change(doc):
        doc["metadata"]["call_overhead_ms"] = value

    bad = edited(lut, tmp_path / "overhead.json", change)
    with pytest.raises(BadInputError, match="call_overhead_ms") as info:
        load_lut(bad)
    assert str(bad) in str(info.value) and repr(value) in str(info.value)


def official_entries(r: int = 160, width_mult: float = 1.0) -> dict:
    return {op.key: {"count": 10, "mean": 0.1, "std": 0.01} for op in resolution_ops(r, width_mult)}


@pytest.mark.parametrize(
    ("field", "text", "shown"),
    [
        ("mean", ".nan", "nan"),
        ("mean", ".inf", "inf"),
        ("mean", "-1.5", "-1.5"),
        ("std", "-0.1", "-0.1"),
        ("std", ".nan", "nan"),
        ("count", "-3", "-3"),
    ],
)
def test_official_yaml_with_a_bad_value_is_refused(tmp_path, field, text, shown):
    entries = official_entries()
    entries[LOGITS][field] = "PLACEHOLDER"
    path = tmp_path / "160_lookup_table.yaml"
    path.write_text(yaml.safe_dump(entries).replace("PLACEHOLDER", text))
    with pytest.raises(BadInputError) as info:
        load_lut(path)
    message = str(info.value)
    assert str(path) in message and LOGITS in message and f"{field}={shown}" in message


def test_every_file_of_a_directory_is_checked(tmp_path, capsys):
    """A bad file is refused even when only another resolution would be used."""
    good = official_entries(160)
    (tmp_path / "160_lookup_table.yaml").write_text(yaml.safe_dump(good))
    bad = official_entries(176)
    key = next(k for k in bad if k.startswith("Logits"))
    bad[key]["mean"] = float("nan")
    (tmp_path / "176_lookup_table.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(BadInputError, match="176_lookup_table.yaml") as info:
        load_lut(tmp_path)
    assert "mean=nan" in str(info.value)
    arch = tmp_path / "arch.json"
    save_arch_file(arch, smallest_arch(160))
    code, _, err = cli(capsys, "predict", "--lut", tmp_path, "--arch", arch)
    assert code == 2 and len(err) == 1 and "176_lookup_table.yaml" in err[0]


def test_directory_mixing_widths_is_refused(tmp_path):
    (tmp_path / "160_lookup_table.yaml").write_text(yaml.safe_dump(official_entries(160, 1.0)))
    (tmp_path / "176_lookup_table.yaml").write_text(yaml.safe_dump(official_entries(176, 1.2)))
    with pytest.raises(BadInputError) as info:
        load_lut(tmp_path)
    message = str(info.value)
    assert "160_lookup_table.yaml" in message and "176_lookup_table.yaml" in message
    assert "16 output channels" in message and "24 channels" in message


def test_toolkit_lut_mixing_widths_is_refused(lut, tmp_path):
    def change(doc):
        doc["entries"]["176"] = {k: {**v, "estimate": v["mean"]} for k, v in official_entries(176, 1.2).items()}

    with pytest.raises(BadInputError, match=r"entries\[160\].*entries\[176\]"):
        load_lut(edited(lut, tmp_path / "mixed.json", change))


def test_resolution_outside_the_space_is_refused(lut, tmp_path):
    def change(doc):
        doc["entries"]["999"] = doc["entries"]["160"]

    with pytest.raises(BadInputError, match="resolution 999"):
        load_lut(edited(lut, tmp_path / "r999.json", change))


def test_hostile_numbers_and_nesting_are_one_line_refusals(lut, tmp_path):
    """Integers beyond float range or over Python's 4300-digit limit, and nesting deeper than the stack."""
    text = lut.read_text()
    cases = {
        "count.json": text.replace('"count": 0', '"count": ' + "9" * 400, 1),
        "digits.json": text.replace('"threads": 1', '"threads": ' + "9" * 5000, 1),
        "slope.json": json.dumps({**json.loads(text), "calibration": {"slope": 10**400, "intercept": 0}}),
        "deep.json": '{"a":' * 100_000,
        "160_lookup_table.yaml": "key:\n  mean: " + "9" * 5000 + "\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(BadInputError) as info:
            load_lut(path)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400, name
    big = edited(lut, tmp_path / "big.json", lambda doc: doc["metadata"].update(call_overhead_ms=10**400))
    with pytest.raises(BadInputError, match="call_overhead_ms"):
        load_lut(big)


def test_a_key_with_a_newline_is_still_one_line(lut, tmp_path, capsys, arch_file):
    def change(doc):
        doc["entries"]["160"]["bad\nkey"] = {"count": 1, "mean": -1.0, "std": 0.0, "estimate": -1.0}

    bad = edited(lut, tmp_path / "newline.json", change)
    code, _, err = cli(capsys, "predict", "--lut", bad, "--arch", arch_file)
    assert code == 2 and len(err) == 1 and "'bad\\nkey'" in err[0]


def test_null_metadata_fields_mean_their_defaults(lut, tmp_path):
    def change(doc):
        doc["metadata"].update(settings=None, drift=None, resolutions=None, value_field=None)
        doc["metadata"]["value_field"] = "estimate"

    table = load_lut(edited(lut, tmp_path / "nulls.json", change))
    assert table.metadata.settings == {} and table.metadata.drift == [] and table.metadata.resolutions == []


# ---------------------------------------------------------------------- calibration


def calibrated(lut: Path, target: Path, slope, intercept, drop: str | None = None) -> Path:
    def change(doc):
        doc["calibration"] = {"slope": slope, "intercept": intercept, "fitted_on": 10, "backend": "fpga", "date": ""}
        if drop:
            del doc["calibration"][drop]

    return edited(lut, target, change)


@pytest.mark.parametrize(
    ("slope", "intercept", "drop", "words"),
    [
        (-1.0, 30.0, None, "'slope' is -1.0"),
        (0.0, 1.0, None, "'slope' is 0.0"),
        (math.nan, 0.0, None, "'slope' is nan"),
        (1.0, math.inf, None, "'intercept' is inf"),
        (1.0, 0.0, "slope", "'slope' is None"),
    ],
)
def test_unphysical_calibration_is_refused(lut, tmp_path, capsys, arch_file, slope, intercept, drop, words):
    bad = calibrated(lut, tmp_path / "cal.json", slope, intercept, drop)
    with pytest.raises(BadInputError) as info:
        load_lut(bad)
    assert str(bad) in str(info.value) and words in str(info.value) and "ofa-deploy validate" in str(info.value)
    code, _, err = cli(capsys, "predict", "--lut", bad, "--arch", arch_file)
    assert code == 2 and len(err) == 1 and words in err[0]


def test_calibration_predicting_negative_ms_is_refused(lut, tmp_path, capsys, arch_file):
    fastest, _ = load_lut(lut).compiled().slot_table.minimum()
    ok = calibrated(lut, tmp_path / "ok.json", 1.0, -fastest / 2)
    assert load_lut(ok).predict(smallest_arch(160)) > 0
    bad = calibrated(lut, tmp_path / "negative.json", 0.5, -(0.5 * fastest + 0.25))
    with pytest.raises(BadInputError) as info:
        load_lut(bad)
    message = str(info.value)
    assert str(bad) in message and "fastest" in message and "-0.2500 ms" in message and "validate" in message
    code, out, err = cli(capsys, "search", "--lut", bad, "--latency-ms", "50", "--out", tmp_path / "a.json")
    assert code == 2 and out == "" and len(err) == 1 and "calibration" in err[0]


# ---------------------------------------------------------------------- interrupted profiles


def drop_keys(prefix: str):
    def change(doc):
        for key in [k for k in doc["entries"]["160"] if k.startswith(prefix)]:
            del doc["entries"]["160"][key]

    return change


@pytest.mark.parametrize("prefix", [STAGE2, LOGITS])
@pytest.mark.parametrize("pareto", [False, True])
def test_search_on_an_interrupted_profile_names_the_key_and_resume(lut, tmp_path, capsys, prefix, pareto):
    """Was an internal All-NaN error (exit 1) when a whole slot's keys were missing."""
    partial = edited(lut, tmp_path / "partial.json", drop_keys(prefix))
    args = ["search", "--lut", partial, "--latency-ms", "50", "--generations", "5", "--out", tmp_path / "a.json"]
    code, out, err = cli(capsys, *args, "--no-progress", *(["--pareto"] if pareto else []))
    assert code == 2 and out == ""
    assert len(err) == 1, err
    line = err[0]
    assert f"'{prefix}" in line and "(resolution 160)" in line and "--resume" in line
    assert f"--out {partial}" in line and "--device dpu-b4096" in line
    assert not (tmp_path / "a.json").exists()


def test_library_search_on_an_interrupted_profile(lut, tmp_path):
    table = load_lut(edited(lut, tmp_path / "partial.json", drop_keys(STAGE2)))
    objective = Objective.flops_proxy(1.0, [160])
    with pytest.raises(MissingKeyError, match="--resume"):
        evolutionary_search(objective, [latency_constraint(table, 50.0)], [160], SearchConfig(8, 2))


def test_search_names_a_resolution_the_profile_never_reached(lut, tmp_path, capsys):
    def change(doc):
        doc["metadata"]["resolutions"] = [160, 176]

    partial = edited(lut, tmp_path / "partial.json", change)
    code, _, err = cli(capsys, "search", "--lut", partial, "--latency-ms", "50", "--out", tmp_path / "a.json")
    assert code == 2 and len(err) == 1 and "(resolution 176)" in err[0] and "--resolutions 176" in err[0]
    assert "--resume" in err[0]


def test_predict_on_an_interrupted_profile_names_the_key_and_resume(lut, tmp_path, capsys, arch_file):
    partial = edited(lut, tmp_path / "partial.json", drop_keys(LOGITS))
    code, out, err = cli(capsys, "predict", "--lut", partial, "--arch", arch_file, "--json")
    assert code == 2 and out == "" and len(err) == 1
    assert LOGITS in err[0] and "(resolution 160)" in err[0] and "--resume" in err[0]
    assert "--device dpu-b4096" in err[0]  # the profile it was measured with: resume refuses other settings


def test_validate_on_an_interrupted_profile_fails_before_measuring(lut, tmp_path, capsys):
    partial = edited(lut, tmp_path / "partial.json", drop_keys(STAGE2))
    code, _, err = cli(capsys, "validate", "--lut", partial, "--samples", "4", "--out", tmp_path / "v", "--no-progress")
    assert code == 2 and len(err) == 1 and "--resume" in err[0]
    assert not (tmp_path / "v").exists()


def test_resume_completes_the_interrupted_table(lut, tmp_path, capsys):
    """The command the error names really completes the table."""
    partial = edited(lut, tmp_path / "partial.json", drop_keys(STAGE2))
    table = LatencyTable.load(partial)  # an incomplete table still loads (profile --resume reads it)
    with pytest.raises(MissingKeyError) as info:
        table.check_complete()
    command = str(info.value).split("complete it with: ", 1)[1].split()
    assert command[:2] == ["ofa-deploy", "profile"]
    assert main([*command[1:], "--no-progress"]) == 0
    load_lut(partial).check_complete()


# ---------------------------------------------------------------------- numeric flags


BIG = str(10**12)


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["search", "--population", "0"], "--population", "at least 4 and at most 100000"),
        (["search", "--population", "3"], "--population", "at least 4"),
        (["search", "--generations", BIG], "--generations", "at most 100000"),
        (["search", "--generations", "0"], "--generations", "at least 1"),
        (["search", "--seed", "-1"], "--seed", "at least 0"),
        (["search", "--seed", str(2**32)], "--seed", "at most 4294967295"),
        (["search", "--latency-ms", "0"], "--latency-ms", "greater than 0"),
        (["search", "--latency-ms", "nan"], "--latency-ms", "finite"),
        (["search", "--latency-ms", "inf"], "--latency-ms", "finite"),
        (["search", "--flops-max", "-5"], "--flops-max", "greater than 0"),
        (["search", "--width-mult", "0.5"], "--width-mult", "width multiplier 0.5"),
        (["validate", "--samples", "3"], "--samples", "at least 4"),
        (["validate", "--samples", "10001"], "--samples", "at most 10000"),
        (["validate", "--threads", "0"], "--threads", "at least 1 and at most 1024"),
        (["validate", "--threads", "1025"], "--threads", "at most 1024"),
        (["validate", "--rounds", "0"], "--rounds", "at least 1"),
        (["validate", "--runs", "10001"], "--runs", "at most 10000"),
        (["validate", "--instances", "101"], "--instances", "at most 100"),
        (["validate", "--seed", "-2"], "--seed", "at least 0"),
        (["profile", "--instances", "0"], "--instances", "at least 1"),
        (["profile", "--interleave", "0"], "--interleave", "at least 1"),
        (["validate", "--interleave", "1025"], "--interleave", "at most 1024"),
        (["profile", "--threads", BIG], "--threads", "at most 1024"),
        (["profile", "--width-mult", "1.1"], "--width-mult", "width multiplier 1.1"),
        (["predict", "--width-mult", "2"], "--width-mult", "width multiplier 2"),
        (["benchmark", "--instances", "0"], "--instances", "at least 1"),
        (["benchmark", "--rounds", "10001"], "--rounds", "at most 10000"),
        (["estimate", "--threads", "0"], "--threads", "at least 1"),
        (["train-predictor", "--epochs", "0"], "--epochs", "at least 1"),
        (["train-predictor", "--epochs", BIG], "--epochs", "at most 100000"),
        (["train-predictor", "--held-out", "1"], "--held-out", "less than 1"),
        (["train-predictor", "--held-out", "0"], "--held-out", "greater than 0"),
        (["train-predictor", "--hidden", "400,0"], "--hidden", "at least 1"),
        (["train-predictor", "--seed", str(2**32)], "--seed", "at most"),
        (["demo", "--samples", "3"], "--samples", "at least 4"),
        (["demo", "--generations", BIG], "--generations", "at most 100000"),
        (["demo", "--budgets", "10,-1"], "--budgets", "greater than 0"),
        (["demo", "--threads", "0"], "--threads", "at least 1"),
        (["demo", "--width-mult", "1.5"], "--width-mult", "width multiplier 1.5"),
        (["info", "--width-mult", "0.9"], "--width-mult", "width multiplier 0.9"),
        (["extract", "--random-weights", "--width-mult", "0.9"], "--width-mult", "width multiplier 0.9"),
    ],
)
def test_out_of_range_flag_is_refused_before_any_work(tmp_path, capsys, args, flag, words):
    """Every other input points nowhere: the bound must be the first thing checked."""
    missing = tmp_path / "missing"
    out = tmp_path / "out"
    required = {
        "search": ["--lut", missing, "--latency-ms", "10", "--out", out / "a.json"],
        "validate": ["--lut", missing, "--backend", "fpga", "--out", out],
        "profile": ["--backend", "fpga", "--resolutions", "160", "--out", out / "lut.json"],
        "predict": ["--lut", missing, "--arch", missing],
        "benchmark": [missing],
        "estimate": ["--backend", "fpga", "--model", missing],
        "train-predictor": ["--data", missing, "--out", out / "p.npz"],
        "demo": ["--out", out],
        "info": ["--arch", missing],
        "extract": ["--arch", missing, "--out", out],
    }[args[0]]
    code, stdout, err = cli(capsys, args[0], *required, *args[1:])
    assert code == 2 and stdout == ""
    assert len(err) == 1, err
    assert flag in err[0] and words in err[0], err[0]
    assert not out.exists()


def test_predict_refuses_a_width_mult_that_is_no_number_in_the_arch_file(lut, tmp_path, capsys):
    arch = tmp_path / "wide.json"
    save_arch_file(arch, smallest_arch(160), width_mult="wide")
    code, _, err = cli(capsys, "predict", "--lut", lut, "--arch", arch)
    assert code == 2 and len(err) == 1 and "'wide'" in err[0]


def test_demo_checks_its_predictor_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    missing = tmp_path / "nope.npz"
    code, _, err = cli(capsys, "demo", "--device", "dpu-b4096", "--accuracy-predictor", missing, "--out", out)
    assert code == 2 and len(err) == 1 and str(missing) in err[0]
    assert not out.exists()


def test_flag_that_is_no_number_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["search", "--lut", "x", "--latency-ms", "ten", "--out", "a.json"])
    assert info.value.code == 2
    assert "--latency-ms" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("verb", "shown"),
    [
        ("search", ["4..100000", "1..100000", "0..4294967295", "> 0", "1.0 or 1.2"]),
        ("validate", ["4..10000", "1..1024", "1..10000", "1..100"]),
        ("train-predictor", ["0 < x < 1", "1..100000"]),
        ("demo", ["each > 0", "4..10000"]),
    ],
)
def test_help_shows_the_ranges(capsys, verb, shown):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in shown:
        assert words in text, words


def test_flags_in_range_still_work(lut, tmp_path, capsys):
    args = ["search", "--lut", lut, "--latency-ms", "50", "--population", "4", "--generations", "1"]
    code, out, _ = cli(capsys, *args, "--seed", str(2**32 - 1), "--out", tmp_path / "a.json", "--json", "--no-progress")
    assert code == 0 and strict_json(out)["latency_ms"]["dpu-b4096"] <= 50


# ---------------------------------------------------------------------- strict JSON


def test_print_json_writes_non_finite_numbers_as_null(capsys):
    print_json({"tau": math.nan, "list": [1.5, math.inf, -math.inf], "nested": {"x": (math.nan, 2)}, "ok": 0.5})
    doc = strict_json(capsys.readouterr().out)
    assert doc == {"tau": None, "list": [1.5, None, None], "nested": {"x": [None, 2]}, "ok": 0.5}


def test_every_json_output_is_strict_json(lut, tmp_path, capsys, arch_file):
    outputs = {}
    for name, args in {
        "profile": ["profile", "--backend", "fpga", "--resolutions", "160", "--out", tmp_path / "p.json"],
        "predict": ["predict", "--lut", lut, "--arch", arch_file],
        "info": ["info", "--arch", arch_file],
        "validate": ["validate", "--lut", lut, "--samples", "4", "--out", tmp_path / "v", "--no-save"],
        "search": ["search", "--lut", lut, "--latency-ms", "40", "--generations", "3", "--out", tmp_path / "s.json"],
    }.items():
        progress = ["--no-progress"] if name in ("profile", "validate", "search") else []
        code, out, err = cli(capsys, *args, *progress, "--json")
        assert code == 0, err
        outputs[name] = strict_json(out)
    assert outputs["predict"]["latency_ms"] > 0 and outputs["validate"]["samples"] == 4
