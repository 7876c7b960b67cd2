"""Accuracy of sub-networks of a trained supernet: BN re-calibration on training images, then top-1
on the held-out split (``ofa-deploy eval-subnets``, and the per-phase check during training), in float32
and, for ``--precision int8``, after post-training quantization (the QDQ model of
:mod:`ofa_deploy.backend.quantization`, calibrated on training images, run by ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ofa_deploy.nn.bn_calibration import recalibrate_bn
from ofa_deploy.nn.supernet import OFAMobileNetV3
from ofa_deploy.space.arch import Arch, largest_arch, sample_arch, smallest_arch
from ofa_deploy.train.datasets import TrainingData

CALIB_IMAGES = 500
EVAL_BATCH = 100
QUANTIZATION_IMAGES = 64  # training images an int8 sub-network is calibrated on


@torch.no_grad()
def subnet_accuracy(
    supernet: OFAMobileNetV3,
    arch: Arch,
    data: TrainingData,
    calib_images: int = CALIB_IMAGES,
    held_out_images: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> float:
    """Top-1 (0..1) of ``arch`` on the held-out split after re-calibrating its BN statistics."""
    net = calibrated_subnet(supernet, arch, data, calib_images, device, seed)
    return _float_top1(net, data, arch.r, device, held_out_images, seed)


@torch.no_grad()
def calibrated_subnet(
    supernet: OFAMobileNetV3,
    arch: Arch,
    data: TrainingData,
    calib_images: int = CALIB_IMAGES,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> torch.nn.Module:
    """``arch``'s weights copied out of the supernet, BN statistics re-calibrated, in eval mode."""
    was_training = supernet.training
    supernet.set_active_arch(arch)
    net = supernet.get_active_subnet().to(device)
    supernet.train(was_training)
    recalibrate_bn(
        net, ((x.to(device), y) for x, y in data.eval_batches("train", arch.r, EVAL_BATCH, calib_images, seed))
    )
    return net.eval()


@torch.no_grad()
def _float_top1(
    net: torch.nn.Module, data: TrainingData, r: int, device: torch.device | str, limit: int | None, seed: int
) -> float:
    return _top1(lambda x: net(x.to(device)).argmax(1).cpu(), data, r, limit, seed)


def _top1(predict: Callable[[torch.Tensor], torch.Tensor], data: TrainingData, r: int, limit: int | None, seed: int):
    correct = seen = 0
    for x, y in data.eval_batches("held_out", r, EVAL_BATCH, limit, seed):
        correct += int((predict(x) == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


def int8_accuracy(
    net: torch.nn.Module,
    arch: Arch,
    width_mult: float,
    data: TrainingData,
    held_out_images: int | None = None,
    seed: int = 0,
) -> float:
    """Top-1 of the (calibrated) float network ``net`` after int8 post-training quantization: its QDQ
    model, calibrated on training images, run by ONNX Runtime's CPU provider on the held-out split."""
    import onnxruntime as ort

    from ofa_deploy.backend.quantization import any_batch_and_size, quantize_onnx
    from ofa_deploy.graph.from_torch import torch_weights
    from ofa_deploy.graph.ir import build_graph
    from ofa_deploy.graph.onnx_writer import to_onnx_bytes
    from ofa_deploy.space.ops import arch_ops

    graph = build_graph(arch_ops(arch, width_mult), torch_weights(net.cpu()))
    model = any_batch_and_size(to_onnx_bytes(graph))
    batches = data.eval_batches("train", arch.r, EVAL_BATCH, QUANTIZATION_IMAGES, seed)
    images = [x[i : i + 1].numpy() for x, _ in batches for i in range(len(x))]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(quantize_onnx(model, images), options, providers=["CPUExecutionProvider"])
    run = lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0].argmax(1))  # noqa: E731
    return _top1(run, data, arch.r, held_out_images, seed)


def archs_to_evaluate(n: int, resolutions: Sequence[int], seed: int) -> list[Arch]:
    """The largest and smallest sub-networks (at the largest / smallest resolution) and ``n``
    random ones, without duplicates."""
    rng = np.random.default_rng(seed)
    archs = [largest_arch(max(resolutions)), smallest_arch(min(resolutions))]
    tries = 0
    while len(archs) < n + 2 and tries < 100 * (n + 2):
        arch = sample_arch(rng, resolutions)
        tries += 1
        if arch not in archs:
            archs.append(arch)
    return archs


def evaluate_archs(
    supernet: OFAMobileNetV3,
    archs: Sequence[Arch],
    data: TrainingData,
    calib_images: int = CALIB_IMAGES,
    device: torch.device | str = "cpu",
    on_result: Callable[[dict], None] | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> list[dict]:
    """One record per arch: the Arch object plus ``accuracy``; for ``int8`` the accuracy after
    quantization, with ``accuracy_fp32`` beside it and ``precision``."""
    from tqdm import tqdm

    records = []
    for arch in tqdm(archs, desc="evaluating", unit="subnet", disable=not progress or None, leave=False):
        if precision == "int8":
            net = calibrated_subnet(supernet, arch, data, calib_images, device)
            fp32 = _float_top1(net, data, arch.r, device, None, 0)
            int8 = int8_accuracy(net, arch, supernet.width_mult, data)
            record = {**arch.to_dict(), "accuracy": int8, "accuracy_fp32": fp32, "precision": "int8"}
        else:
            record = {**arch.to_dict(), "accuracy": subnet_accuracy(supernet, arch, data, calib_images, device=device)}
        records.append(record)
        if on_result is not None:
            on_result(record)
    return records
