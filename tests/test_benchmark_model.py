"""`ofa-deploy benchmark --model FILE`: any model file timed on the host runtimes with trtexec's
statistics, the runtime's own per-operator profile, and one clear line for what cannot run."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ofa_deploy.backend.model_file import RunStatistics, parse_shapes
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import arch_ops

FEW = ["--warmup", "2", "--runs", "12"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The smallest OFA sub-network as .onnx, an OpenVINO IR and a .tflite (written by compile)."""
    where = tmp_path_factory.mktemp("models")
    arch = smallest_arch(128)
    (where / "net.onnx").write_bytes(to_onnx_bytes(build_graph(arch_ops(arch, 1.0))))
    (where / "arch.json").write_text(json.dumps(arch.to_dict()))
    for backend in ("openvino", "tflite"):
        args = ["-q", "compile", "--arch", str(where / "arch.json"), "--backend", backend]
        assert main([*args, "--out", str(where / backend)]) == 0
    return where


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["benchmark", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def check_statistics(s: dict, runs: int) -> None:
    assert s["runs"] == runs and s["warmup_runs"] == 2
    assert 0 < s["min"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0
    assert s["throughput_per_s"] == pytest.approx(1000 / s["mean"]) and s["cv"] == pytest.approx(s["std"] / s["mean"])


def test_an_onnx_file_on_onnxruntime_with_its_operator_profile(models, tmp_path, capsys):
    code, doc = run_json(capsys, "--model", str(models / "net.onnx"), *FEW, "--op-profile", str(tmp_path / "ops"))
    assert code == 0 and doc["backend"] == "onnxruntime"  # the suffix chose it
    assert doc["inputs"] == {"input": [1, 3, 128, 128]}
    check_statistics(doc["statistics"], 12)
    profile = doc["operator_profile"]
    written = json.loads((tmp_path / "ops" / "operators.json").read_text())["operators"]
    assert (tmp_path / "ops" / "operators.png").stat().st_size > 10_000
    assert len(written) == profile["operators"] > 20 and {op["node_type"] for op in written} >= {"Conv"}
    times = [op["mean_ms"] for op in written]
    assert times == sorted(times, reverse=True) and sum(op["percent"] for op in written) == pytest.approx(100)
    # the operators' time is part of an inference's: not more than the slowest whole run (profiled runs are slower)
    assert 0 < profile["total_ms"] < 3 * doc["statistics"]["max"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_an_ofa_network_s_profile_is_charged_to_its_lut_operators(models, tmp_path, capsys, backend):
    """Every profiled node of a network this toolkit wrote belongs to its stem, a block or its head
    (by the op<index>_ names), and each is set against the LUT entry of that operator."""
    lut = tmp_path / "zcu.json"  # the FPGA model's table: the same keys, in no time
    assert main(["-q", "profile", "--device", "zcu102", "--resolutions", "128", "--out", str(lut)]) == 0
    capsys.readouterr()
    args = ["--model", str(models / "net.onnx"), "--backend", backend, *FEW, "--lut", str(lut)]
    code, doc = run_json(capsys, *args, "--op-profile", str(tmp_path / "ops"))
    profile = doc["operator_profile"]
    per = profile["per_lut_operator"]
    keys = [op.key for op in arch_ops(smallest_arch(128), 1.0)]
    assert code == 0 and [row["key"] for row in per["operators"]] == keys and per["resolution"] == 128
    charged = sum(row["profiled_ms"] for row in per["operators"])
    assert charged + per["unmapped_ms"] == pytest.approx(profile["total_ms"])
    assert per["unmapped_ms"] < 0.25 * profile["total_ms"]  # only the runtime's own layout nodes are unclaimed
    convs = [row for row in per["operators"] if row["operator"].startswith("block")]
    assert all(row["nodes"] >= 2 and row["profiled_ms"] > 0 for row in convs)  # each block ran as its own nodes
    assert all(row["lut_ms"] > 0 and row["profiled_over_lut"] > 0 for row in per["operators"])
    written = json.loads((tmp_path / "ops" / "operators.json").read_text())["per_lut_operator"]
    assert written["operators"] == per["operators"]


def test_op_names_and_keys():
    from ofa_deploy.graph.op_names import charge_to_operators, describe_key, op_index

    assert op_index("op12_conv_1_46_conv_nchwc") == 12 and op_index("x/op3_expand_5_conv/WithoutBiases") == 3
    assert op_index("ReorderInput_token_92") is None and op_index("loop7_x") is None
    keys = [op.key for op in arch_ops(smallest_arch(128), 1.0)]
    assert describe_key(keys[1]).startswith("block k3 e1 64x64x16")
    shares, unmapped, count = charge_to_operators(keys, [("op1_a", 1.0), ("op1_b", 0.5), ("output", 2.0), ("R", 0.1)])
    assert shares[1].profiled_ms == 1.5 and shares[1].nodes == 2 and shares[-1].profiled_ms == 2.0
    assert (unmapped, count) == (0.1, 1)


def test_openvino_runs_onnx_and_ir_and_reshapes_with_shape(models, tmp_path, capsys):
    ir = str(models / "openvino" / "model.xml")
    code, doc = run_json(capsys, "--model", ir, *FEW, "--shape", "input:1x3x160x160", "--op-profile", str(tmp_path))
    assert code == 0 and doc["backend"] == "openvino" and doc["inputs"] == {"input": [1, 3, 160, 160]}
    check_statistics(doc["statistics"], 12)
    assert doc["operator_profile"]["profiler"] == "OpenVINO PERF_COUNT" and doc["operator_profile"]["operators"] > 20
    code, doc = run_json(capsys, "--model", str(models / "net.onnx"), "--backend", "openvino", *FEW)
    assert code == 0 and doc["runtime"]["runtime"] == "openvino"


def test_a_tflite_file_on_the_host_interpreter(models, tmp_path, capsys):
    code, doc = run_json(capsys, "--model", str(models / "tflite" / "model.tflite"), *FEW)
    assert code == 0 and doc["backend"] == "tflite" and doc["inputs"] == {"input": [1, 128, 128, 3]}
    check_statistics(doc["statistics"], 12)
    code = main(["benchmark", "--model", str(models / "tflite" / "model.tflite"), "--op-profile", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no operator profiler" in err[0]


def _custom_op_model(path) -> None:
    node = helper.make_node("FancyAttention", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))


def _dynamic_model(path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 32, 32])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y])), str(path))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_what_cannot_run_is_one_line_and_exit_2(models, tmp_path, capsys, backend):
    custom, dynamic = tmp_path / "custom.onnx", tmp_path / "dynamic.onnx"
    _custom_op_model(custom)
    _dynamic_model(dynamic)
    cases = [
        (["--model", str(custom)], "FancyAttention"),  # an operator the runtime lacks
        (["--model", str(dynamic)], "--shape x:"),  # a dynamic input without a shape
        (["--model", str(models / "net.onnx"), "--shape", "y:1x3x32x32"], "no input 'y'"),
        (["--model", str(models / "net.onnx"), "--shape", "input:1x3"], "input"),  # a shape the model rejects
        (["--model", str(tmp_path / "missing.onnx")], "no such model"),
        (["--model", str(models / "net.onnx"), "--lut", "x.json"], "give --op-profile"),
        (["--model", str(dynamic), "--lut", "x.json", "--op-profile", str(tmp_path)], "not written by ofa-deploy"),
        (["--model", str(models / "net.onnx"), "--rounds", "3"], "--rounds is for bundles"),
        ([str(models), "--model", str(models / "net.onnx")], "not both"),
    ]
    for args, words in cases:
        code = main(["benchmark", *args, "--backend", backend, *FEW])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], (args, err)
    assert main(["benchmark", "--model", str(dynamic), "--backend", backend, "--shape", "x:2x3x32x32", *FEW]) == 0


def test_a_cost_model_estimates_instead_and_a_backend_without_the_role_says_so(models, capsys):
    code = main(["benchmark", "--model", str(models / "net.onnx"), "--device", "zcu102", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["latency_ms"] > 0  # what `estimate --model` prints
    assert main(["benchmark", "--model", str(models / "net.onnx"), "--backend", "tvm"]) == 2
    assert "cannot benchmark model files yet" in capsys.readouterr().err


def test_statistics_and_shapes_parse():
    s = RunStatistics.of([1.0, 2.0, 3.0, 4.0], warmup_runs=1)
    assert (s.min, s.median, s.max, s.runs) == (1.0, 2.5, 4.0, 4) and s.p99 == pytest.approx(
        np.percentile([1, 2, 3, 4], 99)
    )
    assert s.noisy and not RunStatistics.of([2.0, 2.01, 1.99], 0).noisy
    assert parse_shapes(["input:1x3x224x224", "mask:1x224"]) == {"input": (1, 3, 224, 224), "mask": (1, 224)}
    for bad in ("input", "input:1x0x3", "input:axb", ":1x3"):
        with pytest.raises(BadInputError):
            parse_shapes([bad])


def test_several_models_are_compared_in_the_same_interleaved_runs(models, tmp_path, capsys):
    """An OFA pick (a bundle), a foreign ONNX and the same network as a file: one table, same runs."""
    bundle = tmp_path / "bundle"
    arch = str(models / "arch.json")
    assert main(["-q", "compile", "--arch", arch, "--backend", "onnxruntime", "--out", str(bundle)]) == 0
    dynamic = tmp_path / "dynamic.onnx"
    _dynamic_model(dynamic)
    capsys.readouterr()
    args = ["--model", str(bundle), "--model", str(models / "net.onnx"), "--model", str(dynamic)]
    code, doc = run_json(capsys, *args, "--shape", "x:1x3x32x32", *FEW)
    assert code == 0 and doc["interleaved"] is True and doc["backend"] == "onnxruntime"
    assert [m["model"] for m in doc["models"]] == [str(bundle / "model.onnx"), str(models / "net.onnx"), str(dynamic)]
    for model in doc["models"]:
        check_statistics(model["statistics"], 12)
    relu, network = doc["models"][2]["statistics"], doc["models"][1]["statistics"]
    assert relu["median"] < network["median"]  # one ReLU on 3x32x32 against a whole sub-network
    assert main(["benchmark", *args, "--shape", "x:1x3x32x32", *FEW]) == 0
    table = capsys.readouterr().out
    assert "3 models on onnxruntime" in table and "vs first" in table
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"tampered")
    assert main(["benchmark", *args, "--shape", "x:1x3x32x32", *FEW]) == 2  # a bundle is verified first
    assert (
        main(["benchmark", "--model", str(models / "net.onnx"), "--model", str(models / "tflite" / "model.tflite")])
        == 2
    )
