"""Deployment bundles: compile a sub-network for a backend, verify it, describe it, benchmark it.

A bundle is a directory holding the backend's artifact (``model.onnx``, OpenVINO IR,
``model.tflite``, ...; its kind is declared by the backend and recorded) and ``manifest.json``
(see :mod:`ofa_deploy.deploy.manifest`): the arch, its FLOPs/params, the predicted latency with
the identity and calibration of the table it came from, the backend and runtime versions, input
and output names, shapes, layout and preprocessing, the sha256 of every file, the verification of
the artifact against torch, and every benchmark run appended. A bundle whose files do not match
their checksums is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ofa_deploy.backend.artifact import Artifact
from ofa_deploy.backend.fingerprint import check_same_target, fingerprint_of_backend, fingerprint_of_identity
from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.quantization import (
    MIN_MEAN_COSINE,
    MIN_TOP1_AGREEMENT,
    RANDOM,
    CalibrationData,
    compare_to_float,
)
from ofa_deploy.backend.timing import Measurement
from ofa_deploy.deploy.integrity import (
    DIGEST_FIELD,
    SIGNATURE_FILE,
    bundle_member,
    manifest_digest,
    signature_document,
    verify_signature,
)
from ofa_deploy.deploy.manifest import MANIFEST, Manifest, read_manifest
from ofa_deploy.errors import BadInputError, OFADeployError
from ofa_deploy.files import atomic_directory, atomic_write_json
from ofa_deploy.graph.from_torch import torch_weights
from ofa_deploy.graph.ir import Graph, build_graph
from ofa_deploy.latency.profiling import load_reference
from ofa_deploy.latency.table import LatencyTable
from ofa_deploy.nn.bn_calibration import recalibrate_bn
from ofa_deploy.nn.data import image_batches
from ofa_deploy.nn.extraction import build_subnet
from ofa_deploy.space.analytics import arch_stats
from ofa_deploy.space.arch import Arch
from ofa_deploy.space.ops import arch_ops


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- compile


@dataclass
class CompileResult:
    """What :func:`compile_bundle` wrote: the bundle directory and its manifest."""

    directory: Path
    manifest: dict[str, Any]


def _outputs(
    backend: Backend, directory: Path, artifact: Artifact, net: torch.nn.Module, inputs: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """torch's and the artifact's logits on the same NCHW ``inputs`` (fed in the artifact's layout); None
    when the backend cannot return outputs (e.g. a cost model)."""
    run = backend.load_artifact(directory, artifact)
    if run is None:
        return None
    expected, got = [], []
    for x in inputs:
        with torch.no_grad():
            expected.append(net(torch.from_numpy(x)).numpy())
        fed = x.transpose(0, 2, 3, 1).copy() if artifact.layout == "NHWC" else x
        got.append(np.asarray(run(fed)).reshape(expected[-1].shape))
    return expected, got


def _no_outputs(backend: Backend) -> dict:
    return {"against": None, "passed": None, "skipped": f"backend '{backend.name}' does not return outputs"}


def _verify(backend: Backend, directory: Path, artifact: Artifact, net: torch.nn.Module, r: int, n: int = 3) -> dict:
    """Run the artifact and torch on the same random inputs; the largest logit difference
    (skipped, and said so, when the backend cannot return outputs, e.g. a cost model)."""
    rng = np.random.default_rng(0)
    outputs = _outputs(
        backend, directory, artifact, net, [rng.standard_normal((1, 3, r, r), np.float32) for _ in range(n)]
    )
    if outputs is None:
        return _no_outputs(backend)
    tolerance = backend.verify_tolerance  # e.g. looser for fp16 GPU engines
    worst = max(float(np.abs(g - e).max()) for e, g in zip(*outputs))
    scale = max(float(np.abs(e).max()) for e in outputs[0])
    # Relative to the logits' scale (at least 1): a trained network's logits on random inputs can reach 1e4 and
    # more, where float32 summation order alone moves them by far more than an absolute 1e-4.
    relative = worst / max(1.0, scale)
    return {
        "against": "torch (extracted sub-network)",
        "inputs": n,
        "max_abs_diff": worst,
        "logit_scale": scale,
        "relative_diff": relative,
        "tolerance": tolerance,
        "passed": relative <= tolerance,
    }


def _verify_int8(
    backend: Backend, directory: Path, artifact: Artifact, subnet: _Subnet, inputs: list[np.ndarray]
) -> dict:
    """An int8 artifact against the float network on the calibration inputs: top-1 agreement and the
    cosine similarity of the logits (see :func:`ofa_deploy.backend.quantization.compare_to_float`).
    With random weights the figures are recorded but not held to the thresholds: an untrained
    network's logits barely depend on its input, so its top-1 class is a near-tie either way."""
    outputs = _outputs(backend, directory, artifact, subnet.net, inputs)
    if outputs is None:
        return _no_outputs(backend)
    result = {"precision": "int8", **compare_to_float(*outputs)}
    if subnet.weights == "random":
        result["skipped"] = "random weights: agreement with float32 says nothing about a trained network's"
        result["passed"] = None
    return result


def _prediction(table: LatencyTable, arch: Arch, width_mult: float) -> dict[str, Any]:
    """What a manifest records about a predicted latency: both figures and the table's identity."""
    return {
        "ms": table.predict(arch, width_mult),
        "uncalibrated_ms": table.predict(arch, width_mult, calibrated=False),
        "lut": table.identity(),
    }


def compile_bundle(
    arch: Arch,
    backend: Backend,
    out: Path,
    width_mult: float | None = None,
    supernet_path: str | Path | None = None,
    calib_data: str | Path | None = None,
    calib_images: int = 256,
    table: LatencyTable | None = None,
    force: bool = False,
    sign_key: Path | None = None,
    device: str | None = None,
    allow_target_mismatch: bool = False,
    calibration: CalibrationData | None = None,
) -> CompileResult:
    """Build the bundle beside ``out`` and put it in place when complete (see
    :func:`ofa_deploy.files.atomic_directory`): an interrupted compile leaves the old bundle or none.
    ``device``: the device profile the backend was configured from (recorded). A ``table`` from
    another target is refused before any work unless ``allow_target_mismatch`` (then recorded).
    ``calibration``: the data an int8 target's network is quantized with and checked on (default: random
    inputs, which the manifest says); refused for another precision."""
    if calibration is not None and backend.precision != "int8":
        raise BadInputError(f"--calibration-data is for --precision int8; this target runs {backend.precision}")
    runtime = backend.check()
    mismatch = []
    if table is not None:
        here = fingerprint_of_backend(backend, device, runtime)
        where = "this compile's target"
        lut = f"the LUT {table.source}"
        mismatch = check_same_target(lut, table.metadata.fingerprint(), where, here, allow_target_mismatch)
    if sign_key is not None:
        signature_document({}, sign_key)  # a bad key fails before any work
    net, w, weights = build_subnet(arch, supernet_path, width_mult)
    if table is not None and table.width_mult != w:
        raise BadInputError(f"the LUT is for width multiplier {table.width_mult} but the sub-network is w{w}")
    calibrated = None
    if calib_data is not None:
        seen = recalibrate_bn(net, image_batches(calib_data, arch.r, max_images=calib_images))
        calibrated = {"data": str(calib_data), "images": seen}
    net.eval()
    out = Path(out)
    graph = build_graph(arch_ops(arch, w), torch_weights(net))
    with atomic_directory(out, force=force) as build:
        subnet = _Subnet(arch, w, net, weights, supernet_path, calibrated)
        manifest = _build(build, backend, runtime, graph, subnet, table, device, calibration or RANDOM)
        if mismatch:  # noted beside the prediction it concerns, then the digest is recomputed
            manifest["predicted_latency"]["target_mismatch_allowed"] = mismatch
            write_manifest(build, manifest)
        if sign_key is not None:
            atomic_write_json(build / SIGNATURE_FILE, signature_document(manifest, sign_key), indent=2)
    verification = manifest["verification"]
    if verification["passed"] is False and verification.get("precision") == "int8":
        raise OFADeployError(
            f"{out}: quantization broke the network: top-1 agreement with float32 "
            f"{verification['top1_agreement']:.0%} (at least {MIN_TOP1_AGREEMENT:.0%} needed), mean logit cosine "
            f"{verification['mean_cosine']:.4f} (at least {MIN_MEAN_COSINE}) on {verification['inputs']} "
            "calibration inputs; the bundle is kept for inspection but should not be shipped (try other "
            "--calibration-data)"
        )
    if verification["passed"] is False:
        raise OFADeployError(
            f"{out}: the compiled artifact differs from torch by {verification['max_abs_diff']:.2e} on logits up "
            f"to {verification['logit_scale']:.3g} (relative {verification['relative_diff']:.2e} > "
            f"{verification['tolerance']}); the bundle is kept for inspection but should not be shipped"
        )
    return CompileResult(out, manifest)


@dataclass(frozen=True)
class _Subnet:
    """The sub-network a bundle is compiled from, and where its weights came from."""

    arch: Arch
    width_mult: float
    net: torch.nn.Module
    weights: str
    supernet_path: str | Path | None
    bn_recalibration: dict[str, Any] | None


def _build(
    out: Path,
    backend: Backend,
    runtime: dict[str, Any],
    graph: Graph,
    subnet: _Subnet,
    table: LatencyTable | None,
    device: str | None,
    calibration: CalibrationData,
) -> dict:
    """Write the artifact, arch.json and manifest.json into ``out`` (the temporary build directory)."""
    arch, w = subnet.arch, subnet.width_mult
    inputs = calibration.inputs(graph.input_shape) if backend.precision == "int8" else None
    backend.calibration_inputs = inputs
    try:
        artifact = backend.compile(graph, out)
    finally:
        backend.calibration_inputs = None
    if inputs is not None and "quantization" in artifact.details:
        artifact.details["quantization"]["calibration"] = calibration.record(len(inputs))
    verification = (
        _verify_int8(backend, out, artifact, subnet, inputs)
        if inputs is not None
        else _verify(backend, out, artifact, subnet.net, arch.r)
    )
    (out / "arch.json").write_text(json.dumps({**arch.to_dict(), "width_mult": w}, indent=2) + "\n")
    files = [*artifact.files, "arch.json"]
    manifest = Manifest.create(
        out / MANIFEST,
        arch=arch,
        width_mult=w,
        stats=arch_stats(arch, w),
        backend=backend,
        device=device,
        runtime=runtime,
        artifact=artifact,
        checksums={name: sha256(out / name) for name in files},
        verification=verification,
        weights=subnet.weights,
        supernet=(
            {"path": str(subnet.supernet_path), "sha256": sha256(Path(subnet.supernet_path))}
            if subnet.supernet_path is not None
            else None
        ),
        bn_recalibration=subnet.bn_recalibration,
        predicted_latency=_prediction(table, arch, w) if table is not None else None,
        reference=table.metadata.reference if table is not None else None,
    )
    write_manifest(out, manifest.document)
    return manifest.document


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with its self-digest (recomputed on every update)."""
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    atomic_write_json(directory / MANIFEST, manifest, indent=2)


# ---------------------------------------------------------------------- read and check


def verify_checksums(directory: Path, manifest: Manifest) -> None:
    """Refuse a bundle whose files were changed, removed, or are not listed."""
    listed = manifest.checksums
    where = directory / MANIFEST
    for name in manifest.files:
        if name not in listed:
            raise BadInputError(f"{directory}: '{name}' has no checksum in the manifest; refusing the bundle")
    for name, expected in listed.items():
        path = bundle_member(directory, name, where)
        if not path.is_file():
            raise BadInputError(f"{directory}: '{name}' is missing; refusing the bundle")
        if sha256(path) != expected:
            raise BadInputError(
                f"{directory}: '{name}' does not match its sha256 in the manifest (modified or corrupted); "
                "refusing the bundle: compile it again"
            )


# ---------------------------------------------------------------------- benchmark


def open_bundle(directory: Path, public_key: Path | None = None) -> Manifest:
    """The manifest of a bundle whose manifest digest and files all check out, and whose signature
    verifies with ``public_key`` when one is given (else BadInputError naming the first problem)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_checksums(directory, manifest)
    if public_key is not None:
        verify_signature(directory, manifest.document, public_key)
        manifest.verified_with = Path(public_key)
    return manifest


def require_trusted_code(directory: Path, backend: Backend, manifest: Manifest, trust_native_code: bool) -> None:
    """Refuse to run a bundle's native code in this process unless its signature verified or the
    user said to trust it: a shared library runs code as soon as it is opened."""
    if backend.loads_native_code(manifest.artifact) and manifest.verified_with is None and not trust_native_code:
        raise BadInputError(
            f"{directory}: benchmarking it on '{backend.name}' loads its native library ({manifest.artifact.main}) "
            "into this process, which runs its code: give --verify-key KEY.pub.pem (a bundle signed with "
            "compile --sign-key) or, for a bundle you built or trust, --trust-native-code"
        )


def benchmark_bundle(
    directory: Path,
    backend: Backend,
    table: LatencyTable | None = None,
    manifest: Manifest | None = None,
    trust_native_code: bool = False,
    device: str | None = None,
    allow_target_mismatch: bool = False,
) -> tuple[dict[str, Any], Measurement]:
    """Time the bundle's artifact, compare with its prediction, append the result to the manifest.
    ``manifest``: one already returned by :func:`open_bundle` (else the bundle is opened here);
    ``trust_native_code``: run native code of an unverified bundle in this process (see
    :func:`require_trusted_code`); ``device``: the device profile the backend was configured from
    (recorded with the result). A prediction from another target is refused before timing unless
    ``allow_target_mismatch`` (then noted in the result)."""
    manifest = manifest if manifest is not None else open_bundle(directory)
    artifact = manifest.artifact
    artifact.check_kind(backend.name, backend.artifact_kinds, str(directory))
    require_trusted_code(directory, backend, manifest, trust_native_code)
    runtime = backend.check()
    predicted = manifest.predicted_latency
    reference_info = manifest.reference
    if table is not None:
        predicted = _prediction(table, manifest.arch, manifest.width_mult)
        reference_info = table.metadata.reference
    mismatch = []
    if predicted is not None and isinstance(predicted.get("lut"), dict):
        here = fingerprint_of_backend(backend, device, runtime)
        source = f"the LUT {table.source}" if table is not None else f"the prediction in {directory}'s manifest"
        recorded = fingerprint_of_identity(predicted["lut"])
        mismatch = check_same_target(source, recorded, "this benchmark's target", here, allow_target_mismatch)
    reference = load_reference(backend, reference_info)
    stats = backend.benchmark(directory, artifact, reference)
    result: dict[str, Any] = {
        "date": _now(),
        "backend": backend.name,
        "device": device,
        "runtime": {"runtime": runtime["runtime"], "runtime_version": runtime["runtime_version"]},
        "threads": backend.timing.threads,
        "precision": backend.precision,
        **stats.summary(),
        "normalised_by_reference": reference is not None,
        "predicted_ms": None if predicted is None else predicted["ms"],
    }
    if mismatch:
        result["target_mismatch_allowed"] = mismatch
    if predicted is not None:
        result["ratio_measured_to_predicted"] = stats.estimate / predicted["ms"]
        result["error_percent"] = 100.0 * (predicted["ms"] - stats.estimate) / stats.estimate
    manifest.document.setdefault("measurements", []).append(result)
    write_manifest(directory, manifest.document)
    return result, stats
