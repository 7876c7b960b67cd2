"""``compile`` and ``benchmark``: bundles that match torch, carry their manifest, and refuse tampering."""

import json

import numpy as np
import pytest
import torch
from conftest import randomize_

from ofa_deploy.cli.main import main
from ofa_deploy.latency.table import load_lut
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.arch import Arch

ARCH = {"ks": [3, 5, 7, 5] * 5, "e": [6, 4, 3, 4] * 5, "d": [2, 3, 4, 2, 3], "r": 128}
FAST = ["--rounds", "2", "--runs", "3"]


def compile_args(arch_file, backend, out, ckpt=None, *extra):
    args = ["compile", "--arch", str(arch_file), "--backend", backend, "--out", str(out), *extra]
    return [*args, "--supernet", str(ckpt)] if ckpt is not None else args


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """A supernet with random, non-trivial weights saved in the official OFA layout."""
    torch.manual_seed(0)
    net = randomize_(OFAMobileNetV3(width_mult=1.0), seed=4).eval()
    path = tmp_path_factory.mktemp("ckpt") / "ofa_mbv3_d234_e346_k357_w1.0"
    torch.save({"state_dict": net.state_dict()}, path)
    return path, net


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    path.write_text(json.dumps(ARCH))
    return path


@pytest.fixture(scope="module")
def onnx_bundle(official_checkpoint, arch_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "onnx"
    ckpt, _ = official_checkpoint
    assert main(compile_args(arch_file, "onnxruntime", out, ckpt)) == 0
    return out


def test_onnx_bundle_matches_supernet_subnet(onnx_bundle, official_checkpoint):
    import onnxruntime as ort

    _, supernet = official_checkpoint
    supernet.set_active_subnet(ks=ARCH["ks"], e=ARCH["e"], d=ARCH["d"])
    session = ort.InferenceSession(str(onnx_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, 128, 128), dtype=np.float32)
    with torch.no_grad():
        expected = supernet(torch.from_numpy(x)).numpy()
    got = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(2)])
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(expected).max() > 1e-2


def test_manifest_contents(onnx_bundle, official_checkpoint):
    m = json.loads((onnx_bundle / "manifest.json").read_text())
    assert m["arch"] == ARCH and m["resolution"] == 128 and m["width_mult"] == 1.0
    assert m["weights"] == "checkpoint" and len(m["supernet"]["sha256"]) == 64
    assert m["backend"]["name"] == "onnxruntime" and m["backend"]["runtime_version"]
    assert m["artifact"]["input"] == {"name": "input", "shape": [1, 3, 128, 128], "layout": "NCHW", "dtype": "float32"}
    assert m["artifact"]["output"]["shape"] == [1, 1000]
    assert m["artifact"]["preprocessing"]["center_crop"] == 128
    assert set(m["checksums"]) == {"model.onnx", "arch.json"}
    assert m["verification"]["passed"] and m["verification"]["max_abs_diff"] <= 1e-4
    assert m["flops_m"] > 0 and m["params"] > 0 and m["toolkit_version"]


def test_benchmark_appends_measurement(onnx_bundle, capsys):
    assert main(["benchmark", str(onnx_bundle), "--json", *FAST]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("mean", "median", "p90", "p99", "std", "count"):
        assert key in doc["latency_ms"]
    assert doc["latency_ms"]["count"] == 2 * 3  # rounds x runs
    assert doc["predicted_ms"] is None  # compiled without --lut
    m = json.loads((onnx_bundle / "manifest.json").read_text())
    assert len(m["measurements"]) >= 1 and m["measurements"][-1]["measured_ms"] == doc["measured_ms"]


def test_benchmark_with_lut_reports_the_tables_prediction_against_the_measurement(onnx_bundle, tmp_path, capsys):
    lut = tmp_path / "lut.json"
    assert (
        main(["profile", "--backend", "onnxruntime", "--resolutions", "128", "--out", str(lut), "--no-progress", *FAST])
        == 0
    )
    predicted = load_lut(lut).predict(Arch.from_dict(ARCH), 1.0)
    capsys.readouterr()
    assert main(["benchmark", str(onnx_bundle), "--lut", str(lut), "--json", *FAST]) == 0
    doc = json.loads(capsys.readouterr().out)
    measured = doc["measured_ms"]
    assert measured > 0 and doc["predicted_ms"] == pytest.approx(predicted, rel=1e-12)
    assert doc["ratio_measured_to_predicted"] == pytest.approx(measured / predicted)
    assert doc["error_percent"] == pytest.approx(100 * (predicted - measured) / measured)
    # the table a user reads shows the same figures as the record appended to the manifest
    assert main(["benchmark", str(onnx_bundle), "--lut", str(lut), *FAST]) == 0
    out = capsys.readouterr().out
    record = json.loads((onnx_bundle / "manifest.json").read_text())["measurements"][-1]
    assert record["predicted_ms"] == pytest.approx(predicted, rel=1e-12)
    for figure in (f"{predicted:.3f}", f"{record['measured_ms']:.3f}", f"{record['error_percent']:+.1f}%"):
        assert figure in out, (figure, out)


def test_tampered_bundle_is_refused(onnx_bundle, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(onnx_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    assert main(["benchmark", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.onnx" in err[0] and "sha256" in err[0]
    (copy / "model.onnx").unlink()
    assert main(["benchmark", str(copy)]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["arch", "checksums", "artifact.input.shape", "backend.name"])
def test_manifest_missing_field(onnx_bundle, tmp_path, capsys, field):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(onnx_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    parts = field.split(".")
    target = m
    for part in parts[:-1]:
        target = target[part]
    del target[parts[-1]]
    (copy / "manifest.json").write_text(json.dumps(m))
    assert main(["benchmark", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"missing field '{field}'" in err[0]


def test_wrong_backend_for_bundle(onnx_bundle, capsys):
    assert main(["benchmark", str(onnx_bundle), "--backend", "tflite"]) == 2
    assert "cannot run it" in capsys.readouterr().err


def test_not_a_bundle(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize(("backend", "files"), [("openvino", ["model.xml", "model.bin"]), ("tflite", ["model.tflite"])])
def test_other_backends_compile_and_verify(backend, files, official_checkpoint, arch_file, tmp_path, capsys):
    ckpt, _ = official_checkpoint
    out = tmp_path / backend
    assert main(compile_args(arch_file, backend, out, ckpt, "--json")) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["artifact"]["files"][: len(files)] == files
    assert m["verification"]["passed"]
    if backend == "tflite":
        assert m["artifact"]["input"]["layout"] == "NHWC" and m["artifact"]["input"]["shape"] == [1, 128, 128, 3]
    assert main(["benchmark", str(out), "--json", *FAST]) == 0


def test_random_weights_are_flagged(arch_file, tmp_path, capsys):
    out = tmp_path / "rand"
    assert main(["compile", "--arch", str(arch_file), "--backend", "onnxruntime", "--out", str(out)]) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["weights"] == "random"


def test_bn_recalibration_on_image_folder(official_checkpoint, arch_file, tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (150, 170, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    ckpt, _ = official_checkpoint
    out = tmp_path / "calibrated"
    assert main(compile_args(arch_file, "onnxruntime", out, ckpt, "--calib-data", str(root))) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["bn_recalibration"]["images"] == 6 and m["verification"]["passed"]
    plain = tmp_path / "plain"
    assert main(compile_args(arch_file, "onnxruntime", plain, ckpt)) == 0
    assert m["checksums"]["model.onnx"] != json.loads((plain / "manifest.json").read_text())["checksums"]["model.onnx"]


def test_compile_bad_inputs(arch_file, tmp_path, capsys):
    assert (
        main(compile_args(arch_file, "onnxruntime", tmp_path / "o", None, "--calib-data", str(tmp_path / "none"))) == 2
    )
    assert "calibration data" in capsys.readouterr().err
    assert main(["compile", "--arch", str(arch_file), "--backend", "nope", "--out", str(tmp_path / "o")]) == 2


def test_the_manifest_compile_writes_is_read_back_by_the_same_class(tmp_path):
    """Manifest.create lays out the document and parses it with the checks every reader runs:
    the typed fields come back equal, and a manifest no reader would accept is never written."""
    from ofa_deploy.backend.artifact import Artifact
    from ofa_deploy.backend.registry import create_backend
    from ofa_deploy.deploy.manifest import Manifest
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.latency.metadata import ReferenceInfo
    from ofa_deploy.space.analytics import arch_stats

    arch = Arch.from_dict(ARCH)
    backend = create_backend("onnxruntime")
    artifact = Artifact("onnx", ["model.onnx"], "input", [1, 3, 128, 128], "NCHW", "logits", [1, 1000])
    fields = dict(
        arch=arch,
        width_mult=1.0,
        stats=arch_stats(arch, 1.0),
        backend=backend,
        runtime={"runtime": "onnxruntime", "runtime_version": "1"},
        artifact=artifact,
        verification={"passed": True},
        weights="random",
        reference=ReferenceInfo("ref-key", 1.5),
    )
    manifest = Manifest.create(
        tmp_path / "manifest.json", checksums={"model.onnx": "a" * 64, "arch.json": "b" * 64}, **fields
    )
    assert manifest.arch == arch and manifest.width_mult == 1.0 and manifest.backend_name == "onnxruntime"
    assert manifest.artifact == artifact and manifest.files == ["model.onnx", "arch.json"]
    assert manifest.reference == ReferenceInfo("ref-key", 1.5) and manifest.timing == backend.timing
    assert json.loads(json.dumps(manifest.document)) == manifest.document  # plain JSON, as written
    with pytest.raises(BadInputError, match="artifact.files"):
        Manifest.create(tmp_path / "manifest.json", checksums={}, **fields)
