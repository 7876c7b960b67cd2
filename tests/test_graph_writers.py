"""The graph writers against torch: whole networks exported to ONNX and TFLite give the same logits."""

import numpy as np
import pytest
import torch
from conftest import randomize_

from ofa_deploy.graph.from_torch import torch_weights
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_deploy.graph.tflite_writer import to_tflite_bytes
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.arch import sample_batch
from ofa_deploy.space.ops import arch_ops, resolution_ops


@pytest.fixture(scope="module", params=[1.0, 1.2])
def subnets(request):
    torch.manual_seed(0)
    supernet = randomize_(OFAMobileNetV3(width_mult=request.param), seed=3).eval()
    out = []
    for arch in sample_batch(np.random.default_rng(11), 2, resolutions=(128, 160)).to_archs():
        supernet.set_active_arch(arch)
        out.append((arch, request.param, supernet.get_active_subnet().eval()))
    return out


def torch_logits(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_onnx_matches_torch(subnets):
    import onnxruntime as ort

    for arch, w, net in subnets:
        model = to_onnx_bytes(build_graph(arch_ops(arch, w), torch_weights(net)))
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((1, 3, arch.r, arch.r), dtype=np.float32)
        got = session.run(None, {"input": x})[0]
        assert np.abs(got - torch_logits(net, x)).max() <= 1e-4


def test_tflite_matches_torch(subnets):
    from ai_edge_litert.interpreter import Interpreter

    for arch, w, net in subnets:
        interpreter = Interpreter(model_content=to_tflite_bytes(build_graph(arch_ops(arch, w), torch_weights(net))))
        interpreter.allocate_tensors()
        x = np.random.default_rng(0).standard_normal((1, 3, arch.r, arch.r), dtype=np.float32)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.transpose(0, 2, 3, 1).copy())
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert got.shape == (1, 1000)
        assert np.abs(got - torch_logits(net, x)).max() <= 1e-4


def test_every_operator_kind_runs_alone_with_the_same_output_in_both_formats():
    """Each kind of operator (first conv, blocks with and without SE, skip and stride, pool, final
    layers) written alone to ONNX and to TFLite: both load in their runtime, take the operator's input
    shape, give its output shape, and the two outputs agree (same graph, same weights)."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    kinds = {}
    for op in resolution_ops(128, 1.0):
        kinds.setdefault((op.kind, op.se, op.idskip, op.stride), op)
    assert len(kinds) >= 8
    for op in kinds.values():
        graph = build_graph([op])
        x = np.random.default_rng(1).standard_normal(graph.input_shape, dtype=np.float32)
        session = ort.InferenceSession(to_onnx_bytes(graph), providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {"input": x})[0]
        assert onnx_out.shape == tuple(graph.output_shape), op.key
        interpreter = Interpreter(model_content=to_tflite_bytes(graph))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], nhwc(x))
        interpreter.invoke()
        tflite_out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert tflite_out.shape == nhwc(onnx_out).shape, op.key
        assert np.isfinite(onnx_out).all() and np.abs(onnx_out).max() > 0, op.key
        assert np.abs(nhwc(onnx_out) - tflite_out).max() <= 1e-4 * max(1.0, np.abs(onnx_out).max()), op.key


def nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC (TFLite's layout); a (N, C) tensor is left as it is."""
    return x.transpose(0, 2, 3, 1).copy() if x.ndim == 4 else x
