"""The fpga backend: a DPUCZDX8G cost model behind the analytical-backend interface."""

from __future__ import annotations

import json

import pytest

from ofa_deploy.backend.registry import create_backend
from ofa_deploy.backends.fpga.model import DpuConfig, FittedParameters, estimate_layers
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.graph.layers import Layer, LayerKind, layers_from_graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.arch import Arch, largest_arch, save_arch_file, smallest_arch
from ofa_deploy.space.ops import arch_ops

PARAMS = FittedParameters.load()


def cost(layer: Layer, **config) -> float:
    return estimate_layers([layer], DpuConfig(**config), PARAMS).layers[0].ms


def test_parameters_are_fitted_and_say_where_from():
    assert PARAMS.provenance.get("fitted_on"), "fpga_parameters.json must record what it was fitted on"
    assert 0 < PARAMS.ddr_efficiency <= 1 and 0 <= PARAMS.feature_map_ddr_fraction <= 1
    assert len(PARAMS.provenance["fitted_on"]) == 6 and "Model Zoo" in PARAMS.provenance["source"]
    # the stored fit is within ~10% of every figure it was fitted on (README: one is at +10.6%)
    for point in PARAMS.provenance["fitted_on"]:
        assert abs(point["estimated_ms"] / point["published_ms"] - 1) <= 0.11, point


def test_stored_fit_is_what_the_model_computes_now():
    """fpga_parameters.json records the estimates it was fitted to; the model must still produce them
    (a changed formula without a refit is caught here)."""
    from ofa_deploy.graph.onnx_reader import layers_from_onnx
    from tests.reference_cnns import reference_models

    zcu102 = DpuConfig(arch="B4096", cores=3, clock_mhz=287.0, ddr_gbs=17.1)
    for point in PARAMS.provenance["fitted_on"]:
        layers = layers_from_onnx(reference_models()[point["model"]]())
        assert estimate_layers(layers, zcu102, PARAMS).latency_ms == pytest.approx(point["estimated_ms"], abs=1e-3)
    assert PARAMS.layer_overhead_cycles >= 0 and PARAMS.invocation_overhead_ms >= 0


def test_engines_scale_as_the_documentation_says():
    # 160 channels and 56 columns divide evenly on both arrays, so only the parallelism differs
    big = Layer("c", LayerKind.CONV, (160, 56, 56), (160, 56, 56), kernel=(3, 3), params=160 * 160 * 9)
    dw = Layer("d", LayerKind.DEPTHWISE, (160, 56, 56), (160, 56, 56), kernel=(3, 3), groups=160, params=160 * 9)
    fc = Layer("f", LayerKind.FC, (2048, 1, 1), (1000, 1, 1), params=2048 * 1000)
    cycles = {
        arch: {c.name: c.cycles for c in estimate_layers([big, dw, fc], DpuConfig(arch=arch), PARAMS).layers}
        for arch in ("B4096", "B1600")
    }
    # dense conv scales with PP x ICP x OCP (2.56), depthwise with PP/2 x ICP (1.6): PG338's parallelism
    assert cycles["B1600"]["c"] / cycles["B4096"]["c"] == pytest.approx(2.56, rel=0.02)
    assert cycles["B1600"]["d"] / cycles["B4096"]["d"] == pytest.approx(1.6, rel=0.02)
    # a fully connected layer at batch 1 waits for its weights: DDR-bound, whatever the array size
    report = estimate_layers([fc], DpuConfig(arch="B4096"), PARAMS).layers[0]
    assert report.bound == "memory"
    assert cost(fc, arch="B512") == pytest.approx(cost(fc, arch="B4096"))
    assert cost(fc, ddr_gbs=4.3) > 3 * cost(fc, ddr_gbs=17.1) * 0.9


def test_channel_padding_waste():
    """17 channels cost as much as 32 on a 16-lane array: the ceiling is the model, not FLOPs."""

    def conv(c: int) -> Layer:
        return Layer("c", LayerKind.CONV, (c, 28, 28), (c, 28, 28), kernel=(3, 3), params=c * c * 9)

    by = {c: estimate_layers([conv(c)], DpuConfig(), PARAMS).layers[0].cycles for c in (16, 17, 32)}
    assert by[17] == by[32] == 4 * by[16]


def test_hard_swish_falls_back_to_the_cpu_unless_substituted():
    conv = Layer("c", LayerKind.CONV, (64, 28, 28), (64, 28, 28), kernel=(1, 1), params=64 * 64)
    hs = Layer("h", LayerKind.HARDSWISH, (64, 28, 28), (64, 28, 28))
    relu = Layer("r", LayerKind.RELU, (64, 28, 28), (64, 28, 28))
    on_cpu = estimate_layers([conv, hs], DpuConfig(), PARAMS)
    substituted = estimate_layers([conv, hs], DpuConfig(hard_swish="relu6"), PARAMS)
    fused = estimate_layers([conv, relu], DpuConfig(), PARAMS)
    assert on_cpu.layers[1].engine == "cpu" and on_cpu.layers[1].ms > 0
    assert substituted.layers[1].engine == "fused" and substituted.latency_ms == pytest.approx(fused.latency_ms)
    assert on_cpu.latency_ms > substituted.latency_ms


def test_subnetwork_estimates_are_additive_and_ordered():
    fpga = create_backend("fpga", arch="B4096", clock_mhz=287.0)
    small, large = (build_graph(arch_ops(a, 1.0)) for a in (smallest_arch(160), largest_arch(224)))
    assert 0 < fpga.estimate(small) < fpga.estimate(large)
    # a network = its operators' estimates minus one invocation overhead each, plus one
    ops = arch_ops(largest_arch(224), 1.0)
    per_op = fpga.measure(ops)
    overhead = fpga.invocation_overhead_ms()
    total = sum(per_op[op.key].estimate - overhead for op in ops) + overhead
    assert fpga.estimate(large) == pytest.approx(total, rel=1e-9)
    assert sum(1 for layer in layers_from_graph(large) if layer.op == LayerKind.HARDSWISH) > 0


@pytest.mark.serial  # a bound on wall time: run without the other serial tests
def test_profile_predict_search_on_a_board(tmp_path, capsys):
    lut = tmp_path / "zcu102.json"
    assert main(["profile", "--device", "zcu102", "--out", str(lut), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["resolutions"]) == 25 and summary["seconds"] < 30
    table = load_lut(lut)
    assert table.metadata.measurement == "estimated" and table.metadata.reference is None
    assert table.metadata.settings["arch"] == "B4096" and table.metadata.runtime_version.startswith("dpuczdx8g")
    assert table.metadata.model_parameters == PARAMS.values()  # the fitted numbers travel with the table
    arch = tmp_path / "a.json"
    save_arch_file(arch, largest_arch(224))
    assert main(["predict", "--lut", str(lut), "--arch", str(arch), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    fpga = create_backend("fpga", arch="B4096", cores=3, clock_mhz=287.0, ddr_gbs=17.1)
    expected = fpga.estimate(build_graph(arch_ops(largest_arch(224), 1.0)))
    assert predicted["latency_ms"] == pytest.approx(expected, rel=1e-9)
    budget = 0.6 * expected
    out = tmp_path / "best.json"
    assert (
        main(["search", "--lut", str(lut), "--latency-ms", f"{budget}", "--generations", "30", "--out", str(out)]) == 0
    )
    capsys.readouterr()
    assert json.loads(out.read_text())["ks"]


def test_relu6_substitute_is_a_flag_and_is_faster(tmp_path, capsys):
    a, b = tmp_path / "cpu.json", tmp_path / "relu6.json"
    assert main(["profile", "--device", "ultra96", "--resolutions", "224", "--out", str(a), "--no-progress"]) == 0
    args = ["profile", "--device", "ultra96", "--hard-swish", "relu6", "--resolutions", "224", "--out", str(b)]
    assert main([*args, "--no-progress"]) == 0
    capsys.readouterr()
    arch = largest_arch(224)
    assert load_lut(b).predict(arch) < load_lut(a).predict(arch)
    assert load_lut(b).metadata.settings["hard_swish"] == "relu6"


def test_bad_settings_are_one_line(tmp_path, capsys):
    with pytest.raises(BadInputError, match="arch"):
        create_backend("fpga", arch="B9999")
    code = main(["profile", "--device", "zcu102", "--dpu-arch", "B9999", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "B9999" in err[0] and "--dpu-arch" in err[0]


def _onnx_model(tmp_path, name="cf_mobilenetv2"):
    from onnx import save

    from tests.reference_cnns import reference_models

    path = tmp_path / f"{name}.onnx"
    save(reference_models()[name](), str(path))
    return path


def test_estimate_any_onnx_model_layer_by_layer(tmp_path, capsys):
    model = _onnx_model(tmp_path)
    assert main(["estimate", "--device", "zcu102", "--model", str(model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    published = 4.13  # ZCU102, 2019 Xilinx AI Model Zoo (fpga_reference.md section 4)
    assert abs(report["latency_ms"] / published - 1) < 0.10
    layers = report["layers"]
    assert sum(c["ms"] for c in layers) + report["invocation_ms"] == pytest.approx(report["latency_ms"])
    engines = {c["engine"] for c in layers}
    assert {"conv", "depthwise", "fused"} <= engines
    # the final softmax is not a DPU operator: listed as a CPU fall-back with a cost, not dropped
    softmax = [c for c in layers if c["source_op"] == "Softmax"]
    assert softmax and softmax[0]["engine"] == "cpu" and softmax[0]["ms"] > 0
    assert all(c["bound"] in ("compute", "memory", "overhead", "cpu", "none") for c in layers)
    # the text form names the slowest layers
    assert main(["estimate", "--device", "zcu102", "--model", str(model)]) == 0
    assert "slowest" in capsys.readouterr().out


def test_sweep_dpu_prints_and_plots_the_design_space(tmp_path, capsys):
    model = _onnx_model(tmp_path, "cf_resnet50")
    plot = tmp_path / "dpu.png"
    args = ["estimate", "--device", "dpu-b4096", "--model", str(model), "--sweep-dpu", "--plot", str(plot), "--json"]
    assert main(args) == 0
    sweep = json.loads(capsys.readouterr().out)["sweep"]
    assert len(sweep) == 8 * 4
    latency = {s["arch"]: s["latency_ms"] for s in sweep if s["cores"] == 1}
    assert latency["B512"] > latency["B1600"] > latency["B4096"]  # a compute-heavy net gains from a bigger array
    fps = [s["throughput_fps"] for s in sweep if s["arch"] == "B4096"]
    assert fps[1] > fps[0] and fps == sorted(fps)  # more cores, more frames (DDR-capped)
    assert plot.stat().st_size > 10_000
    assert main(["estimate", "--backend", "onnxruntime", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "times models" in err and "--backend fpga" in err and "ofa-deploy compile --arch" in err  # what works


def test_compile_and_benchmark_a_bundle(tmp_path, capsys):
    arch = tmp_path / "a.json"
    save_arch_file(arch, smallest_arch(160))
    bundle = tmp_path / "bundle"
    assert main(["compile", "--arch", str(arch), "--device", "zcu104", "--out", str(bundle), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["artifact"]["kind"] == "cost-report" and manifest["artifact"]["main"] == "cost_report.json"
    assert "model.onnx" in manifest["artifact"]["files"] and manifest["verification"]["passed"] is None
    estimated = manifest["artifact"]["details"]["estimated_ms"]
    assert main(["benchmark", str(bundle), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["measured"] is False and result["measured_ms"] == pytest.approx(estimated, rel=1e-9)
    # the ONNX in the bundle is a real model: ONNX Runtime runs it
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((1, 3, 160, 160), np.float32)})[0]
    assert out.shape == (1, 1000)


def test_estimate_says_where_the_time_goes_and_names_the_largest_lever(tmp_path, capsys):
    """The OFA tutorial net on a ZCU102: hard-swish on the ARM core is most of the time, and the
    ReLU6 substitute is the lever, estimated; with the substitute given, no such lever is left."""
    tutorial = Arch.from_dict(
        {
            "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
            "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
            "d": [2, 2, 3, 4, 3],
            "r": 224,
        }
    )
    model = tmp_path / "tutorial.onnx"
    model.write_bytes(to_onnx_bytes(build_graph(arch_ops(tutorial, 1.0))))
    args = ["estimate", "--device", "zcu102", "--model", str(model)]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    parts = report["breakdown_ms"]
    assert sum(parts.values()) == pytest.approx(report["latency_ms"])
    assert parts["cpu"] > 0.5 * report["latency_ms"] and parts["call"] == report["invocation_ms"]
    [lever] = report["alternatives"]
    assert lever["flag"] == "--hard-swish relu6" and lever["addresses"] == "cpu"
    assert main([*args, "--hard-swish", "relu6", "--json"]) == 0
    substituted = json.loads(capsys.readouterr().out)
    assert lever["latency_ms"] == pytest.approx(substituted["latency_ms"])
    assert lever["latency_ms"] < 0.5 * report["latency_ms"]
    assert substituted["alternatives"] == [] and substituted["breakdown_ms"]["cpu"] == 0

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "where the time goes" in out and "CPU fall-back (HardSwish x" in out
    assert f"largest lever: --hard-swish relu6: {report['latency_ms']:.3f} -> {lever['latency_ms']:.3f} ms" in out
    assert main([*args, "--hard-swish", "relu6"]) == 0
    assert "largest lever: --hard-swish" not in capsys.readouterr().out
