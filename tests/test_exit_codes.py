"""The exit-code contract (README, "Exit codes"; issue 11, item 6), verb by verb.

Every row: a verb with arguments and one bad input -> the exit code (2 bad input, 3 target
unavailable) and stderr holding exactly one line, ``ofa-deploy VERB: error: ...``, that names the
file or value at fault; nothing else there (no progress or warning line before it). Run in-process
through :func:`ofa_deploy.cli.main.main` (fast). Inputs are small and deterministic: the LUT comes
from the analytical FPGA model (``profile --device dpu-b4096``, about a second, no timing noise).

Rows that fail because of a bug in a file this suite does not own are strict ``xfail`` naming the
bug: when it is fixed the row XPASSes, and the mark is to be removed.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ofa_deploy.cli.main import build_parser, main
from ofa_deploy.space.arch import save_arch_file, smallest_arch

ARCH = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}


def _dump(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Valid inputs and one file per kind of bad input, by name (``{name}`` in a row's arguments)."""
    d = tmp_path_factory.mktemp("exit-codes")
    argv = ["-q", "profile", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(d / "lut.json")]
    assert main([*argv, "--no-progress"]) == 0
    save_arch_file(d / "arch.json", smallest_arch(160))
    bundle = d / "bundle"
    assert main(["-q", "compile", "--arch", str(d / "arch.json"), "--device", "dpu-b4096", "--out", str(bundle)]) == 0
    f: dict[str, Path] = {"dir": d, "lut": d / "lut.json", "arch": d / "arch.json", "bundle": bundle}

    f["missing"] = d / "missing.json"
    f["bad_json"] = d / "bad.json"
    f["bad_json"].write_text('{"ks": [3, 3,')
    f["not_utf8"] = d / "latin1.json"
    f["not_utf8"].write_bytes(b'{"ks": "\xff\xfe"}')
    f["empty_dir"] = d / "empty"
    f["empty_dir"].mkdir()
    f["r161"] = _dump(d / "r161.json", {**ARCH, "r": 161})
    f["ks4"] = _dump(d / "ks4.json", {**ARCH, "ks": [4] + [3] * 19})
    f["r224"] = _dump(d / "r224.json", {**ARCH, "r": 224})  # valid, but the LUT has only 160
    f["width_text"] = _dump(d / "width-text.json", {**ARCH, "width_mult": "wide"})
    f["huge_int_arch"] = d / "huge-int.json"
    f["huge_int_arch"].write_text(json.dumps(ARCH).replace('"r": 160', '"r": ' + "9" * 5000))

    lut = json.loads(f["lut"].read_text())
    key = next(iter(lut["entries"]["160"]))
    f["nan_lut"] = d / "nan.lut.json"
    f["nan_lut"].write_text(json.dumps(_with(lut, ("entries", "160", key, "estimate"), float("nan"))))
    f["neg_lut"] = _dump(d / "negative.lut.json", _with(lut, ("entries", "160", key, "estimate"), -1.0))
    f["huge_int_lut"] = d / "huge-int.lut.json"
    f["huge_int_lut"].write_text(json.dumps(lut).replace('"threads": 1', '"threads": ' + "9" * 5000, 1))
    f["huge_count_lut"] = d / "huge-count.lut.json"
    f["huge_count_lut"].write_text(json.dumps(lut).replace('"count": 0', '"count": ' + "9" * 400, 1))
    f["deep_lut"] = d / "deep.lut.json"
    f["deep_lut"].write_text('{"a":' * 100_000)
    f["newline_backend_lut"] = _dump(d / "newline-backend.lut.json", _with(lut, ("metadata", "backend"), "fpga\nx"))
    ort = {"backend": "onnxruntime", "device": "host-cpu", "settings": {}}  # as if profiled with ONNX Runtime
    f["ort_lut"] = _dump(d / "ort.lut.json", {**lut, "metadata": {**lut["metadata"], **ort}})

    f["bad_profile"] = d / "device.yaml"
    f["bad_profile"].write_text("name: mine\nbackend: onnxruntime\ntiming: {threads: 0}\n")
    f["newline_profile"] = d / "newline.yaml"
    f["newline_profile"].write_text('name: mine\nbackend: "fpga\\nonnxruntime"\n')
    f["newline_key_lut"] = d / "160_lookup_table.yaml"
    f["newline_key_lut"].write_text('"two\\nlines": {count: 1, mean: x, std: 0}\n')
    f["number_key_profile"] = d / "number-key.yaml"
    f["number_key_profile"].write_text("name: mine\nbackend: fpga\n2: two\n")
    f["latin1_profile"] = d / "latin1.yaml"
    f["latin1_profile"].write_bytes(b"name: caf\xe9\nbackend: fpga\n")

    f["garbage_onnx"] = d / "garbage.onnx"
    f["garbage_onnx"].write_bytes(b"\x00\x01 not a protobuf")
    f["model_onnx"] = bundle / "model.onnx"
    f["group0_onnx"] = _conv_group_0(d / "group0.onnx")

    f["tampered"] = _copy_bundle(bundle, d / "tampered")
    (f["tampered"] / "cost_report.json").write_text("{}")
    f["bad_manifest"] = _copy_bundle(bundle, d / "bad-manifest")
    (f["bad_manifest"] / "manifest.json").write_text("{oops")
    f["old_bundle"] = _copy_bundle(bundle, d / "old-bundle")
    manifest = json.loads((f["old_bundle"] / "manifest.json").read_text())
    _dump(f["old_bundle"] / "manifest.json", {**manifest, "format": "ofa-deploy-bundle/1"})
    f["surrogate_bundle"] = _copy_bundle(bundle, d / "surrogate-bundle")
    _dump(f["surrogate_bundle"] / "manifest.json", {**manifest, "weights": "\ud83d"})  # JSON: "\\ud83d"
    f["huge_int_bundle"] = _copy_bundle(bundle, d / "huge-int-bundle")
    text = json.dumps(manifest).replace('"threads": 1', '"threads": ' + "9" * 5000, 1)
    (f["huge_int_bundle"] / "manifest.json").write_text(text)

    f["bad_predictor"] = d / "predictor.npz"
    f["bad_predictor"].write_bytes(b"PK\x03\x04 truncated zip")
    f["nan_predictor"] = _nan_predictor(d / "nan-predictor.npz")
    f["list_header_predictor"] = d / "list-header.npz"
    np.savez(f["list_header_predictor"], header=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    f["ragged_csv"] = d / "ragged.csv"
    f["ragged_csv"].write_text("ks,e,d,r,accuracy\n3,3\n")
    f["dataset"] = d / "data.jsonl"
    records = [{**ARCH, "accuracy": 0.7}] * 12
    f["dataset"].write_text("\n".join(json.dumps(r) for r in records) + "\n")
    f["short_dataset"] = d / "short.jsonl"
    f["short_dataset"].write_text("\n".join(json.dumps(r) for r in records[:3]) + "\n")
    f["nan_dataset"] = d / "nan.jsonl"
    f["nan_dataset"].write_text("\n".join(json.dumps({**r, "accuracy": float("nan")}) for r in records) + "\n")
    return {name: str(path) for name, path in f.items()}


def _with(document: dict, path: tuple, value) -> dict:
    document = json.loads(json.dumps(document))
    node = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return document


def _copy_bundle(bundle: Path, target: Path) -> Path:
    shutil.copytree(bundle, target)
    return target


def _conv_group_0(path: Path) -> Path:
    from onnx import helper

    from tests.reference_cnns import squeezenet

    model = squeezenet()
    conv = model.graph.node[0]
    kept = [a for a in conv.attribute if a.name != "group"]
    del conv.attribute[:]
    conv.attribute.extend([*kept, helper.make_attribute("group", 0)])
    path.write_bytes(model.SerializeToString())
    return path


def _nan_predictor(path: Path) -> Path:
    from ofa_deploy.search.predictors import ENCODING, FORMAT

    header = json.dumps({"format": FORMAT, "encoding": ENCODING, "layers": 1}).encode()
    np.savez(
        path,
        header=np.frombuffer(header, dtype=np.uint8),
        w0=np.full((1, 128), np.nan, dtype=np.float32),
        b0=np.zeros(1, dtype=np.float32),
    )
    return path


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """The busy-machine warning depends on the load of whoever runs the tests: off, so rows are exact. And
    ``demo`` points the cache variables into its output folder: restored after each row."""
    monkeypatch.setattr("ofa_deploy.cli.common.busy_warning", lambda: None)
    for name in ("XDG_CACHE_HOME", "MPLCONFIGDIR"):
        monkeypatch.delenv(name, raising=False)


def xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


def row(case_id: str, command: str, code: int, names: str, bug: str | None = None):
    """One row: ``command`` split at spaces (``{name}``: a fixture file, ``{out}``: a fresh directory)."""
    marks = [xfail(bug)] if bug else []
    return pytest.param(command.split(), code, names, id=case_id, marks=marks)


SEARCH = "search --lut {lut} --out {out}/best.json --no-progress"

ROWS = [
    # devices takes no input; its rows are below (a missing runtime is listed, not an error; --json is strict)
    # -- info
    row("info-unreadable-file", "info --arch {missing}", 2, "{missing}"),
    row("info-directory-for-file", "info --arch {empty_dir}", 2, "{empty_dir}"),
    row("info-not-utf8", "info --arch {not_utf8}", 2, "{not_utf8}"),
    row("info-invalid-json", "info --arch {bad_json}", 2, "{bad_json}"),
    row("info-resolution-outside-space", "info --arch {r161}", 2, "'r' is 161"),
    row("info-kernel-outside-space", "info --arch {ks4}", 2, "'ks'"),
    row("info-width-mult-flag", "info --arch {arch} --width-mult 0.75", 2, "0.75"),
    row("info-width-mult-in-file", "info --arch {width_text}", 2, "wide"),
    row("info-4300-digit-integer", "info --arch {huge_int_arch}", 2, "{huge_int_arch}"),
    # -- profile
    row("profile-unknown-backend", "profile --backend warp-drive --out {out}/l.json", 2, "warp-drive"),
    row("profile-unknown-device", "profile --device nowhere --out {out}/l.json", 2, "nowhere"),
    row("profile-invalid-device-file", "profile --device {bad_profile} --out {out}/l.json", 2, "{bad_profile}"),
    row("profile-device-file-not-yaml", "profile --device {bad_json} --out {out}/l.json", 2, "{bad_json}"),
    row(
        "profile-device-file-backend-two-lines",
        "profile --device {newline_profile} --out {out}/l.json",
        2,
        "'backend' is",
    ),
    row("profile-device-file-number-key", "profile --device {number_key_profile} --out {out}/l.json", 2, "key 2"),
    row("profile-device-file-not-utf8", "profile --device {latin1_profile} --out {out}/l.json", 2, "{latin1_profile}"),
    row(
        "profile-resolution-outside-space", "profile --device dpu-b4096 --resolutions 161 --out {out}/l.json", 2, "161"
    ),
    row("profile-resolutions-not-numbers", "profile --device dpu-b4096 --resolutions abc --out {out}/l.json", 2, "abc"),
    row("profile-width-mult", "profile --device dpu-b4096 --width-mult 0.5 --out {out}/l.json", 2, "0.5"),
    row("profile-threads-0", "profile --device dpu-b4096 --threads 0 --out {out}/l.json", 2, "--threads"),
    row(
        "profile-unwritable-out",
        "profile --device dpu-b4096 --resolutions 160 --out {arch}/l.json --no-progress",
        2,
        "{arch}",
    ),
    # -- predict
    row("predict-unreadable-lut", "predict --lut {missing} --arch {arch}", 2, "{missing}"),
    row("predict-invalid-json-lut", "predict --lut {bad_json} --arch {arch}", 2, "{bad_json}"),
    row("predict-lut-directory-without-tables", "predict --lut {empty_dir} --arch {arch}", 2, "{empty_dir}"),
    row("predict-nan-in-lut", "predict --lut {nan_lut} --arch {arch}", 2, "nan"),
    row("predict-negative-latency-in-lut", "predict --lut {neg_lut} --arch {arch}", 2, "-1.0"),
    row("predict-lut-4300-digit-int", "predict --lut {huge_int_lut} --arch {arch}", 2, "{huge_int_lut}"),
    row("predict-lut-nested-too-deep", "predict --lut {deep_lut} --arch {arch}", 2, "{deep_lut}"),
    row("predict-lut-count-beyond-float", "predict --lut {huge_count_lut} --arch {arch}", 2, "{huge_count_lut}"),
    row("predict-lut-key-with-newline", "predict --lut {newline_key_lut} --arch {arch}", 2, "{newline_key_lut}"),
    row("predict-unreadable-arch", "predict --lut {lut} --arch {missing}", 2, "{missing}"),
    row("predict-arch-outside-space", "predict --lut {lut} --arch {r161}", 2, "161"),
    row("predict-resolution-not-in-lut", "predict --lut {lut} --arch {r224}", 2, "resolution 224"),
    row("predict-width-mult-in-file", "predict --lut {lut} --arch {width_text}", 2, "wide"),
    # -- validate
    row("validate-unreadable-lut", "validate --lut {missing} --out {out}/v", 2, "{missing}"),
    row("validate-unknown-device", "validate --lut {lut} --device nowhere --out {out}/v", 2, "nowhere"),
    row("validate-unknown-backend", "validate --lut {lut} --backend warp-drive --out {out}/v", 2, "warp-drive"),
    row("validate-other-backend-than-lut", "validate --lut {lut} --backend onnxruntime --out {out}/v", 2, "fpga"),
    row(
        "validate-lut-backend-two-lines",
        "validate --lut {newline_backend_lut} --out {out}/v",
        2,
        "fpga",
    ),
    row("validate-samples-0", "validate --lut {lut} --samples 0 --out {out}/v", 2, "--samples"),
    # -- search
    row("search-infeasible-latency", f"{SEARCH} --latency-ms 0.001", 2, "smallest reachable"),
    row("search-latency-0", f"{SEARCH} --latency-ms 0", 2, "--latency-ms"),
    row("search-limits-without-lut", f"{SEARCH} --latency-ms 5 --latency-ms 6", 2, "--latency-ms"),
    row("search-population-0", f"{SEARCH} --latency-ms 20 --population 0", 2, "--population"),
    row("search-generations-huge", f"{SEARCH} --latency-ms 20 --generations {10**12}", 2, "--generations"),
    row("search-negative-flops", f"{SEARCH} --latency-ms 20 --flops-max -1", 2, "--flops-max"),
    row("search-width-mult-of-other-lut", f"{SEARCH} --latency-ms 20 --width-mult 1.2", 2, "1.2"),
    row("search-unreadable-predictor", f"{SEARCH} --latency-ms 20 --accuracy-predictor {{missing}}", 2, "{missing}"),
    row(
        "search-damaged-predictor",
        f"{SEARCH} --latency-ms 20 --accuracy-predictor {{bad_predictor}}",
        2,
        "{bad_predictor}",
    ),
    row(
        "search-nan-predictor",
        f"{SEARCH} --latency-ms 20 --accuracy-predictor {{nan_predictor}}",
        2,
        "{nan_predictor}",
    ),
    row(
        "search-predictor-header-not-an-object",
        f"{SEARCH} --latency-ms 20 --accuracy-predictor {{list_header_predictor}}",
        2,
        "{list_header_predictor}",
    ),
    row("search-nan-in-lut", "search --lut {nan_lut} --latency-ms 20 --out {out}/b.json", 2, "nan"),
    row("search-invalid-json-lut", "search --lut {bad_json} --latency-ms 20 --out {out}/b.json", 2, "{bad_json}"),
    # -- compile
    row("compile-unreadable-arch", "compile --arch {missing} --device dpu-b4096 --out {out}/b", 2, "{missing}"),
    row("compile-arch-outside-space", "compile --arch {ks4} --device dpu-b4096 --out {out}/b", 2, "'ks'"),
    row("compile-unknown-backend", "compile --arch {arch} --backend warp-drive --out {out}/b", 2, "warp-drive"),
    row("compile-unknown-device", "compile --arch {arch} --device nowhere --out {out}/b", 2, "nowhere"),
    row("compile-out-not-empty", "compile --arch {arch} --device dpu-b4096 --out {bundle}", 2, "{bundle}"),
    row(
        "compile-unreadable-supernet",
        "compile --arch {arch} --device dpu-b4096 --supernet {missing} --out {out}/b",
        2,
        "{missing}",
    ),
    row(
        "compile-invalid-lut",
        "compile --arch {arch} --device dpu-b4096 --lut {bad_json} --out {out}/b",
        2,
        "{bad_json}",
    ),
    # -- benchmark
    row("benchmark-no-such-directory", "benchmark {missing}", 2, "{missing}"),
    row("benchmark-file-not-directory", "benchmark {arch}", 2, "{arch}"),
    row("benchmark-directory-not-a-bundle", "benchmark {empty_dir}", 2, "{empty_dir}"),
    row("benchmark-invalid-manifest-json", "benchmark {bad_manifest}", 2, "{bad_manifest}"),
    row("benchmark-old-bundle-format", "benchmark {old_bundle}", 2, "ofa-deploy-bundle/1"),
    row("benchmark-tampered-bundle", "benchmark {tampered}", 2, "cost_report.json"),
    row("benchmark-manifest-4300-digit-int", "benchmark {huge_int_bundle}", 2, "{huge_int_bundle}"),
    row("benchmark-manifest-lone-surrogate", "benchmark {surrogate_bundle}", 2, "{surrogate_bundle}"),
    row("benchmark-unknown-backend", "benchmark {bundle} --backend warp-drive", 2, "warp-drive"),
    row("benchmark-unknown-device", "benchmark {bundle} --device nowhere", 2, "nowhere"),
    row("benchmark-artifact-of-other-kind", "benchmark {bundle} --backend onnxruntime", 2, "cost-report"),
    row("benchmark-invalid-lut", "benchmark {bundle} --lut {bad_json}", 2, "{bad_json}"),
    # -- estimate
    row("estimate-unreadable-model", "estimate --device dpu-b4096 --model {missing}", 2, "{missing}"),
    row("estimate-not-onnx", "estimate --device dpu-b4096 --model {garbage_onnx}", 2, "{garbage_onnx}"),
    row("estimate-conv-group-0", "estimate --device dpu-b4096 --model {group0_onnx}", 2, "'group' is 0"),
    row("estimate-unknown-backend", "estimate --backend warp-drive --model {model_onnx}", 2, "warp-drive"),
    # -- doctor (a target that cannot be used is its findings and exit 3: tests/test_doctor.py)
    row("doctor-unknown-backend", "doctor --backend warp-drive", 2, "warp-drive"),
    row("doctor-unknown-device", "doctor --device nowhere", 2, "nowhere"),
    row("doctor-invalid-device-file", "doctor --device {bad_profile}", 2, "{bad_profile}"),
    row("doctor-flag-of-another-backend", "doctor --backend onnxruntime --serial 127.0.0.1:5555", 2, "--serial"),
    row("estimate-unknown-device", "estimate --device nowhere --model {model_onnx}", 2, "nowhere"),
    row("estimate-timed-backend", "estimate --backend onnxruntime --model {model_onnx}", 2, "onnxruntime"),
    # -- demo (each fails before any work)
    row("demo-unknown-device", "demo --device nowhere --out {out}/d", 2, "nowhere"),
    row("demo-resolution-outside-space", "demo --resolutions 161 --out {out}/d", 2, "161"),
    row("demo-width-mult", "demo --width-mult 0.5 --out {out}/d", 2, "0.5"),
    row("demo-samples-0", "demo --samples 0 --out {out}/d", 2, "--samples"),
    row(
        "demo-unreadable-predictor",
        "demo --device dpu-b4096 --resolutions 160 --samples 4 --accuracy-predictor {missing} --out {out}/d",
        2,
        "{missing}",
    ),
    # -- fit
    row("fit-unreadable-measurements", "fit --measurements {missing} --out {out}/f.json", 2, "{missing}"),
    row("fit-invalid-json-line", "fit --measurements {bad_json} --out {out}/f.json", 2, "{bad_json}:1"),
    # -- train / eval-subnets (each fails before any training)
    row("train-unknown-dataset", "train --dataset nowhere --out {out}/t", 2, "nowhere"),
    row(
        "train-imagefolder-without-train-dir", "train --dataset imagefolder:{empty_dir} --out {out}/t", 2, "{empty_dir}"
    ),
    row("train-unknown-recipe", "train --dataset digits --recipe nope --out {out}/t", 2, "nope"),
    row(
        "eval-subnets-unreadable-supernet",
        "eval-subnets --supernet {missing} --dataset digits --samples 4 --out {out}/a.jsonl",
        2,
        "{missing}",
    ),
    row(
        "eval-subnets-not-a-checkpoint",
        "eval-subnets --supernet {bad_json} --dataset digits --samples 4 --out {out}/a.jsonl",
        2,
        "{bad_json}",
    ),
    # -- deploy
    row("deploy-no-such-directory", "deploy {missing} --backend adb", 2, "{missing}"),
    row("deploy-tampered-bundle", "deploy {tampered} --backend adb", 2, "cost_report.json"),
    row("deploy-local-backend", "deploy {bundle} --backend onnxruntime", 2, "not a remote device"),
    # -- extract
    row("extract-unreadable-arch", "extract --arch {missing} --random-weights --out {out}/x", 2, "{missing}"),
    row("extract-arch-outside-space", "extract --arch {r161} --random-weights --out {out}/x", 2, "161"),
    row("extract-unreadable-supernet", "extract --arch {arch} --supernet {missing} --out {out}/x", 2, "{missing}"),
    row("extract-not-a-checkpoint", "extract --arch {arch} --supernet {bad_json} --out {out}/x", 2, "{bad_json}"),
    row("extract-width-mult", "extract --arch {arch} --random-weights --width-mult 0.5 --out {out}/x", 2, "0.5"),
    # -- train-predictor
    row("train-unreadable-data", "train-predictor --data {missing} --out {out}/p.npz", 2, "{missing}"),
    row("train-invalid-json", "train-predictor --data {bad_json} --out {out}/p.npz", 2, "{bad_json}"),
    row("train-not-utf8", "train-predictor --data {not_utf8} --out {out}/p.npz", 2, "{not_utf8}"),
    row("train-ragged-csv", "train-predictor --data {ragged_csv} --out {out}/p.npz", 2, "{ragged_csv}:2"),
    row("train-too-few-records", "train-predictor --data {short_dataset} --out {out}/p.npz", 2, "3 records"),
    row("train-nan-accuracy", "train-predictor --data {nan_dataset} --out {out}/p.npz", 2, "nan"),
    row("train-out-not-npz", "train-predictor --data {dataset} --out {out}/p.txt", 2, "p.txt"),
    row(
        "train-held-out-outside-0-1",
        "train-predictor --data {dataset} --out {out}/p.npz --held-out 1.5",
        2,
        "--held-out",
    ),
]


def _fill(text: str, files: dict[str, str], out: Path) -> str:
    return text.format(**files, out=out)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, verb: str, names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr must be one line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith(f"ofa-deploy {verb}: error: "), line
    assert names in line, f"the line does not name {names!r}: {line}"
    return line


@pytest.mark.parametrize(("argv", "code", "names"), ROWS)
def test_bad_input_is_one_line_and_its_exit_code(files, tmp_path, capsys, argv, code, names):
    argv = [_fill(a, files, tmp_path) for a in argv]
    got, _, err = run_cli(argv, capsys)
    assert got == code, err
    line = assert_one_line(err, argv[0], _fill(names, files, tmp_path))
    if "smallest reachable" in line:  # an infeasible limit says what is reachable, a number in ms
        assert re.search(r"smallest reachable is \d+(\.\d+)? ms", line), line


# ---------------------------------------------------------------------- a runtime that is not installed: exit 3


@pytest.fixture(scope="module")
def ort_bundle(files, tmp_path_factory) -> str:
    """A bundle compiled for ONNX Runtime while it is still importable."""
    out = tmp_path_factory.mktemp("ort") / "bundle"
    assert main(["-q", "compile", "--arch", files["arch"], "--backend", "onnxruntime", "--out", str(out)]) == 0
    return str(out)


MISSING_RUNTIME = [
    row("profile", "profile --backend onnxruntime --resolutions 160 --out {out}/l.json", 3, "pip install"),
    row("profile-device", "profile --device host-cpu --resolutions 160 --out {out}/l.json", 3, "pip install"),
    row("validate", "validate --lut {ort_lut} --out {out}/v --no-progress", 3, "pip install"),
    row("compile", "compile --arch {arch} --backend onnxruntime --out {out}/b", 3, "pip install"),
    row("benchmark", "benchmark {ort_bundle}", 3, "pip install"),
    row("demo", "demo --out {out}/d", 3, "pip install"),
]


@pytest.mark.parametrize(("argv", "code", "names"), MISSING_RUNTIME)
def test_missing_runtime_is_exit_3_naming_the_package(
    files, ort_bundle, tmp_path, capsys, monkeypatch, argv, code, names
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    argv = [_fill(a, {**files, "ort_bundle": ort_bundle}, tmp_path) for a in argv]
    got, _, err = run_cli(argv, capsys)
    assert got == code, err
    assert_one_line(err, argv[0], names)


BUSY_MACHINE = [
    row("profile", "profile --backend onnxruntime --resolutions 160 --out {out}/l.json", 3, "pip install"),
    row("validate", "validate --lut {ort_lut} --out {out}/v --no-progress", 3, "pip install"),
    row("benchmark", "benchmark {ort_bundle}", 3, "pip install"),
]


@pytest.mark.parametrize(("argv", "code", "names"), BUSY_MACHINE)
def test_missing_runtime_on_a_busy_machine_is_still_one_line(
    files, ort_bundle, tmp_path, capsys, monkeypatch, argv, code, names
):
    """A warning about this machine's load is noise when nothing can be measured: the error stays alone."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr("ofa_deploy.cli.common.busy_warning", lambda: "the machine is busy (test)")
    argv = [_fill(a, {**files, "ort_bundle": ort_bundle}, tmp_path) for a in argv]
    got, _, err = run_cli(argv, capsys)
    assert got == code, err
    assert_one_line(err, argv[0], names)


def test_devices_lists_a_missing_runtime_without_failing(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, out, err = run_cli(["devices", "--json"], capsys)
    assert code == 0 and err == ""
    backend = json.loads(out)["backends"]["onnxruntime"]
    assert backend["available"] is False and "pip install" in backend["reason"]


# ---------------------------------------------------------------------- argparse's own errors


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        pytest.param(["search", "--lut", "x", "--out", "y"], "--latency-ms", id="search-missing-required"),
        pytest.param(["search", "--lut", "x", "--latency-ms", "fast", "--out", "y"], "fast", id="search-not-a-number"),
        pytest.param(["demo", "--budgets", "abc"], "abc", id="demo-budgets-not-numbers"),
        pytest.param(["info", "--arch", "a.json", "--colour", "red"], "--colour", id="info-unknown-flag"),
        pytest.param(["teleport"], "teleport", id="unknown-verb"),
        pytest.param(["completion", "tcsh"], "tcsh", id="completion-unknown-shell"),
    ],
)
def test_usage_errors_are_exit_2_and_end_with_the_error_line(capsys, argv, names):
    """argparse prints its usage block, then one ``error:`` line naming the argument (by design: the usage
    shows what was expected); the exit code is 2 like any bad input."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in last and names in last, last


# ---------------------------------------------------------------------- every verb is covered


def test_every_verb_has_rows():
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "verb"]
    verbs = set(sub.choices)
    # devices and completion read no input: their only bad input is a usage error (covered above)
    covered = {p.values[0][0] for p in ROWS} | {p.values[0][0] for p in MISSING_RUNTIME} | {"devices", "completion"}
    assert verbs <= covered, sorted(verbs - covered)


# ---------------------------------------------------------------------- --json is strict JSON


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant} on stdout")

    return json.loads(text, parse_constant=refuse)


JSON_VERBS = [
    pytest.param("devices --json", id="devices"),
    pytest.param("info --arch {arch} --json", id="info"),
    pytest.param("predict --lut {lut} --arch {arch} --json", id="predict"),
    pytest.param(f"{SEARCH} --latency-ms 20 --population 8 --generations 2 --json", id="search"),
    pytest.param("estimate --device dpu-b4096 --model {model_onnx} --json", id="estimate"),
    pytest.param("benchmark {bundle} --json", id="benchmark-estimate"),
    pytest.param("profile --device dpu-b512 --resolutions 128 --out {out}/l.json --no-progress --json", id="profile"),
    pytest.param("compile --arch {arch} --device dpu-b4096 --lut {lut} --out {out}/b --json", id="compile"),
]


@pytest.mark.parametrize("command", JSON_VERBS)
def test_json_output_is_strict_json(files, tmp_path, capsys, command):
    argv = [_fill(a, files, tmp_path) for a in command.split()]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    document = _strict(out)
    assert isinstance(document, dict)
