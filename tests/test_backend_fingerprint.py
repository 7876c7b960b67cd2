"""Target fingerprints (ofa_deploy/backend/fingerprint.py): a number from one target is not set
against another without the user saying so, through the CLI (compile --lut, benchmark)."""

import json

import pytest

from ofa_deploy.backend.fingerprint import TargetFingerprint, check_same_target, differences
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.space.arch import smallest_arch

PHONE = TargetFingerprint("adb", "pixel2", "tflite", "2.16.1", 1, None, {"model": "Pixel 2"})


def test_what_changes_latency_and_what_does_not():
    same = TargetFingerprint("adb", "pixel2", "tflite", "2.16.1", 1, None, {"model": "Pixel 2"})
    assert differences(PHONE, same) == ([], [])
    patch = TargetFingerprint("adb", "pixel2", "tflite", "2.16.3", 1)
    assert differences(PHONE, patch) == ([], ["tflite 2.16.1 vs 2.16.3"])  # compatible: a warning
    major = TargetFingerprint("adb", "pixel2", "tflite", "3.0.0", 1)
    assert differences(PHONE, major)[0] == ["tflite 2.16.1 vs 3.0.0"]
    threads = TargetFingerprint("adb", "pixel2", "tflite", "2.16.1", 4)
    assert differences(PHONE, threads)[0] == ["threads 1 vs 4"]
    other_phone = TargetFingerprint("adb", "pixel2", identity={"model": "Pixel 2 XL"})
    assert differences(PHONE, other_phone)[0] == ["model Pixel 2 vs Pixel 2 XL"]
    fp16 = TargetFingerprint("nvidia", "t4", precision="fp16")
    assert differences(TargetFingerprint("nvidia", "t4", precision="fp32"), fp16)[0] == ["precision fp32 vs fp16"]
    unknown = TargetFingerprint()  # an old record that says nothing: nothing to compare, nothing refused
    assert differences(PHONE, unknown) == ([], [])


def test_a_mismatch_is_one_line_naming_both_sides_unless_allowed(caplog):
    other = TargetFingerprint("adb", "note10", "tflite", "2.16.1", 1)
    with pytest.raises(BadInputError) as info:
        check_same_target("the LUT p2.json", PHONE, "this compile's target", other)
    message = str(info.value)
    assert "\n" not in message and "device 'pixel2'" in message and "device 'note10'" in message
    assert "device pixel2 vs note10" in message and "--allow-target-mismatch" in message
    assert check_same_target("the LUT p2.json", PHONE, "here", other, allow=True) == ["device pixel2 vs note10"]
    patch = TargetFingerprint("adb", "pixel2", "tflite", "2.16.3", 1)
    assert check_same_target("the LUT p2.json", PHONE, "here", patch) == []
    assert "tflite 2.16.1 vs 2.16.3" in caplog.text  # the compatible difference, warned


@pytest.fixture(scope="module")
def zcu102(tmp_path_factory):
    """A ZCU102 table (the FPGA model: seconds) and an arch."""
    where = tmp_path_factory.mktemp("fp")
    assert main(["profile", "--device", "zcu102", "--resolutions", "160", "--out", str(where / "zcu.json")]) == 0
    (where / "arch.json").write_text(json.dumps(smallest_arch(160).to_dict()))
    return where


def test_compile_refuses_a_lut_of_another_target(zcu102, tmp_path, capsys):
    arch, lut = str(zcu102 / "arch.json"), str(zcu102 / "zcu.json")
    capsys.readouterr()
    code = main(["compile", "--arch", arch, "--device", "host-cpu", "--lut", lut, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "device 'zcu102'" in err[0] and "device 'host-cpu'" in err[0] and "backend fpga vs onnxruntime" in err[0]
    assert not (tmp_path / "b").exists()  # refused before any work

    code = main(
        [
            "compile",
            "--arch",
            arch,
            "--backend",
            "onnxruntime",
            "--threads",
            "2",
            "--lut",
            lut,
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert code == 2 and "threads 1 vs 2" in capsys.readouterr().err  # another thread count changes latency


def test_benchmark_refuses_a_prediction_of_another_board_and_records_the_device(zcu102, tmp_path, capsys):
    bundle = tmp_path / "zcu-160"
    args = ["compile", "--arch", str(zcu102 / "arch.json"), "--device", "zcu102", "--lut", str(zcu102 / "zcu.json")]
    assert main([*args, "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backend"]["device_profile"] == "zcu102"
    capsys.readouterr()

    assert main(["benchmark", str(bundle), "--json"]) == 0  # on the board it was compiled for
    record = json.loads(capsys.readouterr().out)
    assert record["device"] == "zcu102" and "target_mismatch_allowed" not in record

    assert main(["benchmark", str(bundle), "--device", "ultra96"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device zcu102 vs ultra96" in err[0] and "--allow-target-mismatch" in err[0]

    assert main(["benchmark", str(bundle), "--device", "ultra96", "--allow-target-mismatch", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["device"] == "ultra96" and record["target_mismatch_allowed"] == ["device zcu102 vs ultra96"]
    kept = json.loads((bundle / "manifest.json").read_text())["measurements"]
    assert [m["device"] for m in kept] == ["zcu102", "ultra96"]  # the refused run appended nothing


def test_validate_refuses_a_lut_of_another_board_and_its_measurements_name_their_target(zcu102, tmp_path, capsys):
    """validate measures against the LUT's predictions: on another board that is refused before any
    measurement; allowed, the report and every saved measurement line name the target measured."""
    lut = str(zcu102 / "zcu.json")
    common = ["validate", "--lut", lut, "--samples", "6", "--no-save", "--no-progress"]
    capsys.readouterr()
    assert main([*common, "--device", "ultra96", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device zcu102 vs ultra96" in err[0] and not (tmp_path / "v").exists()

    saved = tmp_path / "ultra96.jsonl"
    args = [*common, "--device", "ultra96", "--allow-target-mismatch", "--save-measurements", str(saved)]
    assert main([*args, "--out", str(tmp_path / "v2"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"]["device"] == "ultra96" and report["target_mismatch_allowed"] == ["device zcu102 vs ultra96"]
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert {line["target"]["device"] for line in lines} == {"ultra96"}


@pytest.fixture(scope="module")
def measured(zcu102, tmp_path_factory):
    """Measurement files of six networks each, from validate on zcu102 and on ultra96."""
    where = tmp_path_factory.mktemp("measured")
    for device, extra in (("zcu102", []), ("ultra96", ["--allow-target-mismatch"])):
        args = ["validate", "--lut", str(zcu102 / "zcu.json"), "--device", device, "--samples", "12", "--no-save"]
        args += [*extra, "--no-progress", "--save-measurements", str(where / f"{device}.jsonl")]
        assert main([*args, "--out", str(where / device)]) == 0
    return where


def test_fit_gives_the_table_the_target_measured_and_refuses_mixed_targets(zcu102, measured, tmp_path, capsys):
    """A table fitted on ultra96's measurements over zcu102's table is ultra96's (so compile and
    benchmark compare against the right board); lines from two boards in one file are refused."""
    base = str(zcu102 / "zcu.json")
    out = tmp_path / "ultra96-fit.json"
    args = ["fit", "--measurements", str(measured / "ultra96.jsonl"), "--lut", base, "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    metadata = json.loads(out.read_text())["metadata"]
    assert metadata["device"] == "ultra96" and metadata["backend"] == "fpga"

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text((measured / "zcu102.jsonl").read_text() + (measured / "ultra96.jsonl").read_text())
    capsys.readouterr()
    args = ["fit", "--measurements", str(mixed), "--lut", base, "--no-progress", "--out", str(tmp_path / "m.json")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 13 of" in err[0] and "device ultra96 vs zcu102" in err[0]
    assert main([*args, "--allow-target-mismatch"]) == 0
    fit = json.loads((tmp_path / "m.json").read_text())["metadata"]["fit"]
    assert fit["target_mismatch_allowed"] == ["device ultra96 vs zcu102"]
