"""INT8 end to end on the host backends: quantized latency tables, quantized artifacts that really are
integer (the ONNX model's QDQ nodes, OpenVINO's runtime model), compile's check against float32, and
the one-line refusals where a backend does not run int8."""

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import randomize_

from ofa_deploy.backend.quantization import (
    MIN_MEAN_COSINE,
    MIN_TOP1_AGREEMENT,
    CalibrationData,
    compare_to_float,
    integer_summary,
    quantize_onnx,
)
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_deploy.latency.table import load_lut
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.arch import Arch
from ofa_deploy.space.ops import arch_ops
from ofa_deploy.train.checkpoint import TrainingDirectory

ARCH = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 4] * 5, "d": [2, 3, 2, 2, 2], "r": 128}
QUICK = ["--threads", "1", "--rounds", "1", "--runs", "2"]


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    path.write_text(json.dumps(ARCH))
    return path


def supernet(root, outlier: bool = False):
    """A 10-class supernet with non-trivial weights (a trained network's logits depend on the input;
    an untrained one's barely do). ``outlier``: one channel before the head scaled by 10^4, the
    activation outlier that per-tensor quantization cannot represent beside the other channels."""
    torch.manual_seed(0)
    net = randomize_(OFAMobileNetV3(n_classes=10))
    if outlier:
        with torch.no_grad():
            net.final_expand_layer.bn.weight[0] *= 1e4
    TrainingDirectory(root).save_phase("full", net, {"dataset": "digits", "n_classes": 10, "resolutions": [128]})
    return root / "supernet.pth"


@pytest.fixture(scope="module")
def int8_lut(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "int8.json"
    args = ["profile", "--backend", "onnxruntime", "--precision", "int8", "--resolutions", "128", *QUICK]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


def test_an_int8_table_records_its_precision_and_refuses_a_float_target(int8_lut, tmp_path, capsys):
    table = load_lut(int8_lut)
    assert table.precision == "int8" and table.metadata.settings["precision"] == "int8"
    assert table.identity()["precision"] == "int8" and len(table.tables[128]) > 90
    capsys.readouterr()
    args = ["validate", "--lut", str(int8_lut), "--backend", "onnxruntime", "--precision", "fp32", "--samples", "4"]
    assert main([*args, "--out", str(tmp_path / "v"), "--no-progress"]) == 2
    assert "precision int8 vs fp32" in capsys.readouterr().err
    # resuming the table at another precision would mix two precisions in one table
    resume = ["profile", "--backend", "onnxruntime", "--resolutions", "128", *QUICK, "--out", str(int8_lut)]
    assert main([*resume, "--resume", "--no-progress"]) == 2
    assert "measured with precision='int8', this run has 'fp32'" in capsys.readouterr().err


def test_int8_measurements_fit_an_int8_table_and_a_bundle_runs_its_own_precision(int8_lut, tmp_path, capsys):
    measurements = tmp_path / "m.jsonl"
    args = ["validate", "--lut", str(int8_lut), "--backend", "onnxruntime", "--precision", "int8", *QUICK]
    saved = ["--save-measurements", str(measurements), "--out", str(tmp_path / "v")]
    assert main([*args, "--samples", "6", "--no-save", *saved, "--no-progress"]) == 0
    assert all(json.loads(line)["target"]["precision"] == "int8" for line in measurements.read_text().splitlines())
    fitted = tmp_path / "fit.json"
    assert main(["fit", "--measurements", str(measurements), "--out", str(fitted), "--no-progress"]) == 0
    assert load_lut(fitted).precision == "int8"  # from the measurements' target record (no base to lend it)
    capsys.readouterr()
    fit = ["fit", "--measurements", str(measurements), "--precision", "fp32", "--out", str(tmp_path / "f2.json")]
    assert main([*fit, "--no-progress"]) == 2
    assert "was measured at int8" in capsys.readouterr().err


def test_predict_and_search_say_the_precision(int8_lut, arch_file, tmp_path, capsys):
    assert main(["predict", "--lut", str(int8_lut), "--arch", str(arch_file)]) == 0
    assert "int8, r128" in capsys.readouterr().out
    out = tmp_path / "best.json"
    args = ["search", "--lut", str(int8_lut), "--latency-ms", "100", "--out", str(out)]
    assert main([*args, "--population", "20", "--generations", "3", "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["precision"].values()) == ["int8"]


def test_onnx_artifact_is_integer_and_checked_against_float(arch_file, tmp_path, capsys):
    ckpt = supernet(tmp_path / "sn")
    bundle = tmp_path / "b"
    args = ["compile", "--arch", str(arch_file), "--backend", "onnxruntime", "--precision", "int8"]
    assert main([*args, "--supernet", str(ckpt), "--calibration-data", "digits", "--out", str(bundle)]) == 0
    model = onnx.load(str(bundle / "model.onnx"))
    int8_weights = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    produced_by = {out: node for node in model.graph.node for out in node.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and len(int8_weights) >= len(convs)
    for conv in convs:  # data and weights both come dequantized from integers
        data, weight = (produced_by[name] for name in conv.input[:2])
        assert data.op_type == weight.op_type == "DequantizeLinear"
        assert weight.input[0] in int8_weights
    manifest = json.loads((bundle / "manifest.json").read_text())
    v, q = manifest["verification"], manifest["artifact"]["details"]["quantization"]
    assert v["precision"] == "int8" and v["passed"] is True and v["inputs"] == 32
    assert v["top1_agreement"] >= MIN_TOP1_AGREEMENT and v["mean_cosine"] >= MIN_MEAN_COSINE
    assert q["calibration"] == {"data": "digits", "inputs": 32} and q["integer_ops"]["quantized_ops"]["Conv"] == len(
        convs
    )
    assert manifest["backend"]["settings"]["precision"] == "int8"
    # the bundle benchmarks as compiled: int8, read back from the manifest
    capsys.readouterr()
    assert main(["benchmark", str(bundle), *QUICK, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and report["backend"] == "onnxruntime" and report["measured_ms"] > 0
    assert main(["benchmark", str(bundle), "--precision", "fp32", *QUICK]) == 2
    assert "was compiled for int8, not fp32" in capsys.readouterr().err


def test_openvino_runs_the_quantized_layers_in_int8(arch_file, tmp_path):
    ov = pytest.importorskip("openvino", reason="the 'openvino' extra is not installed")
    bundle = tmp_path / "b"
    args = ["compile", "--arch", str(arch_file), "--backend", "openvino", "--precision", "int8", "--out", str(bundle)]
    assert main(args) == 0
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(bundle / "model.xml")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    convolutions = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    ]
    assert convolutions and set(convolutions) <= {"u8", "i8"}  # every convolution executes on integers
    manifest = json.loads((bundle / "manifest.json").read_text())
    q = manifest["artifact"]["details"]["quantization"]
    assert set(q["openvino_runtime_precisions"]["Convolution"]) <= {"u8", "i8"}
    assert q["calibration"]["data"] == "random" and "latency" in q["calibration"]["note"]
    assert manifest["verification"]["passed"] is None  # random weights: recorded, not held to thresholds
    assert "random weights" in manifest["verification"]["skipped"]


def test_a_network_quantization_breaks_is_refused_and_kept_for_inspection(arch_file, tmp_path, capsys):
    ckpt = supernet(tmp_path / "sn", outlier=True)
    bundle = tmp_path / "b"
    args = ["compile", "--arch", str(arch_file), "--backend", "onnxruntime", "--precision", "int8"]
    assert main([*args, "--supernet", str(ckpt), "--calibration-data", "digits", "--out", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "quantization broke the network" in err and len(err.strip().splitlines()) == 1
    verification = json.loads((bundle / "manifest.json").read_text())["verification"]
    assert verification["passed"] is False and verification["top1_agreement"] < MIN_TOP1_AGREEMENT


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--backend", "tflite", "--precision", "fp16"], "backend tflite runs fp32 or int8 here, not fp16"),
        (["--backend", "tvm", "--precision", "int8"], "backend tvm runs fp32 here, not int8"),
        (["--backend", "onnxruntime", "--precision", "fp16"], "backend onnxruntime runs fp32 or int8 here"),
        (["--backend", "fpga", "--precision", "fp32"], "the DPU runs int8 only"),
        (["--backend", "onnxruntime", "--calibration-data", "digits"], "--calibration-data is for --precision int8"),
        (["--backend", "onnxruntime", "--precision", "int8", "--calibration-data", "imagenet"], "expected random"),
    ],
)
def test_precisions_a_backend_does_not_run_are_one_line_exit_2(arch_file, tmp_path, capsys, argv, said):
    assert main(["compile", "--arch", str(arch_file), *argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_quantizer_output_and_checks():
    graph = build_graph(arch_ops(Arch.from_dict(ARCH)))
    inputs = CalibrationData("random").inputs(graph.input_shape, 4)
    summary = integer_summary(quantize_onnx(to_onnx_bytes(graph), inputs))
    assert summary["int8_weight_tensors"] >= summary["quantized_ops"]["Conv"] > 0
    assert set(summary["float_ops"]) <= {"Flatten"}  # everything that computes runs on integers
    assert integer_summary(to_onnx_bytes(graph))["quantize_linear"] == 0
    with pytest.raises(BadInputError, match="at least one calibration input"):
        quantize_onnx(to_onnx_bytes(graph), [])
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal(10) for _ in range(10)]
    same = compare_to_float(logits, [x + 1e-3 * rng.standard_normal(10) for x in logits])
    assert same["passed"] and same["top1_agreement"] == 1.0
    shuffled = compare_to_float(logits, logits[1:] + logits[:1])
    assert not shuffled["passed"] and shuffled["mean_cosine"] < MIN_MEAN_COSINE


def test_calibration_sources(tmp_path):
    digits = CalibrationData.parse("digits").inputs((1, 3, 32, 32), 5)
    assert len(digits) == 5 and digits[0].shape == (1, 3, 32, 32) and digits[0].dtype == np.float32
    assert not np.allclose(digits[0], digits[1])
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    images = CalibrationData.parse(f"imagefolder:{tmp_path}").inputs((1, 3, 32, 32), 8)
    assert len(images) == 3 and images[0].shape == (1, 3, 32, 32)
    with pytest.raises(BadInputError, match="not a directory"):
        CalibrationData.parse(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(BadInputError, match="1x3xRxR"):
        CalibrationData.parse("digits").inputs((1, 24, 16, 16), 2)


def test_tflite_artifact_is_full_integer_and_checked_against_float(arch_file, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    ckpt = supernet(tmp_path / "sn")
    bundle = tmp_path / "b"
    args = ["compile", "--arch", str(arch_file), "--backend", "tflite", "--precision", "int8"]
    assert main([*args, "--supernet", str(ckpt), "--calibration-data", "digits", "--out", str(bundle)]) == 0
    interpreter = Interpreter(model_path=str(bundle / "model.tflite"))
    tensors = {t["name"]: t for t in interpreter.get_tensor_details()}
    weights = [t for name, t in tensors.items() if name.endswith("_weight")]
    # weights, biases, int32 paddings and shapes; the float logits the DEQUANTIZE at the end writes
    operands = ("_weight", "_bias", "_pads", "_shape", "_float")
    activations = [t for name, t in tensors.items() if name.startswith("op") and not name.endswith(operands)]
    assert weights and all(t["dtype"] == np.int8 for t in weights)
    per_channel = [t for t in weights if len(t["quantization_parameters"]["scales"]) > 1]
    assert len(per_channel) == len(weights) - 1  # every convolution per channel; the classifier per tensor
    assert activations and [t["name"] for t in activations if t["dtype"] != np.int8] == []
    assert interpreter.get_input_details()[0]["dtype"] == np.float32  # float in and out, integer inside
    manifest = json.loads((bundle / "manifest.json").read_text())
    v = manifest["verification"]
    assert v["passed"] is True and v["top1_agreement"] >= MIN_TOP1_AGREEMENT and v["mean_cosine"] >= MIN_MEAN_COSINE
    types = manifest["artifact"]["details"]["quantization"]["tensor_types"]
    assert set(types["CONV_2D"]) == {"INT8/INT8/INT8"} and set(types["DEPTHWISE_CONV_2D"]) == {"INT8/INT8/INT8"}


def test_precision_for_a_backend_without_the_setting_is_one_line(monkeypatch):
    """A plugin backend whose settings have no ``precision``: --precision names it, before any work."""
    import argparse

    from ofa_deploy.backend.settings import BackendSettings
    from ofa_deploy.cli import common

    class Plain:
        Settings = BackendSettings

    monkeypatch.setattr(common, "backend_class", lambda name: Plain)
    monkeypatch.setattr(common, "backend_options", lambda: {})
    with pytest.raises(BadInputError, match="--precision int8: backend 'plain' has no precision setting"):
        common.flag_settings(argparse.Namespace(precision="int8"), "plain")
    assert common.flag_settings(argparse.Namespace(precision=None), "plain") == ({}, [])
