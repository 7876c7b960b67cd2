"""Deployment bundles: compile a sub-network for a backend, verify it, describe it, benchmark it.

A bundle is a directory holding the backend's artifact (``model.onnx``, OpenVINO IR,
``model.tflite``) and ``manifest.json``: the arch, its FLOPs/params, the predicted latency with the
identity and calibration of the table it came from, the backend and runtime versions, input and
output names, shapes, layout and preprocessing, the sha256 of every file, the verification of the
artifact against torch, and every benchmark run appended. A bundle whose files do not match their
checksums is refused.
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

from ofa_deploy import __version__
from ofa_deploy.backend.interface import Artifact, Backend, LatencyStats
from ofa_deploy.deploy.graph.from_torch import torch_weights
from ofa_deploy.deploy.graph.ir import build_graph
from ofa_deploy.errors import BadInputError, OFADeployError
from ofa_deploy.latency.profiling import load_reference
from ofa_deploy.latency.table import LatencyTable, atomic_write_text
from ofa_deploy.nn.bn_calibration import recalibrate_bn
from ofa_deploy.nn.data import image_batches, preprocessing
from ofa_deploy.nn.extraction import build_subnet
from ofa_deploy.space.analytics import arch_stats
from ofa_deploy.space.arch import Arch
from ofa_deploy.space.ops import arch_ops

FORMAT = "ofa-deploy-bundle/1"
MANIFEST = "manifest.json"
VERIFY_TOLERANCE = 1e-4
REQUIRED_FIELDS = (
    "format",
    "arch",
    "width_mult",
    "backend.name",
    "artifact.files",
    "artifact.input.name",
    "artifact.input.shape",
    "artifact.input.layout",
    "artifact.output.name",
    "artifact.output.shape",
    "checksums",
)


def sha256(path: Path) -> str:
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
    directory: Path
    manifest: dict[str, Any]


def _verify(backend: Backend, directory: Path, artifact: Artifact, net: torch.nn.Module, r: int, n: int = 3) -> dict:
    """Run the artifact and torch on the same random inputs; the largest logit difference."""
    run = backend.load_artifact(directory, artifact)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(n):
        x = rng.standard_normal((1, 3, r, r), dtype=np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        fed = x.transpose(0, 2, 3, 1).copy() if artifact.layout == "NHWC" else x
        got = np.asarray(run(fed)).reshape(expected.shape)
        worst = max(worst, float(np.abs(got - expected).max()))
    return {
        "against": "torch (extracted sub-network)",
        "inputs": n,
        "max_abs_diff": worst,
        "tolerance": VERIFY_TOLERANCE,
        "passed": worst <= VERIFY_TOLERANCE,
    }


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
) -> CompileResult:
    runtime = backend.check()
    net, w, weights = build_subnet(arch, supernet_path, width_mult)
    if table is not None and table.width_mult != w:
        raise BadInputError(f"the LUT is for width multiplier {table.width_mult} but the sub-network is w{w}")
    calibrated = None
    if calib_data is not None:
        seen = recalibrate_bn(net, image_batches(calib_data, arch.r, max_images=calib_images))
        calibrated = {"data": str(calib_data), "images": seen}
    net.eval()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{out}: cannot create the bundle directory ({exc.strerror})") from None
    graph = build_graph(arch_ops(arch, w), torch_weights(net))
    artifact = backend.export(graph, out)
    (out / "arch.json").write_text(json.dumps({**arch.to_dict(), "width_mult": w}, indent=2) + "\n")
    files = [*artifact.files, "arch.json"]
    verification = _verify(backend, out, artifact, net, arch.r)
    stats = arch_stats(arch, w)
    predicted = None
    reference = None
    if table is not None:
        predicted = _prediction(table, arch, w)
        reference = table.metadata.get("reference")
    supernet = None
    if supernet_path is not None:
        supernet = {"path": str(supernet_path), "sha256": sha256(Path(supernet_path))}
    manifest = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "created": _now(),
        "arch": arch.to_dict(),
        "arch_hash": arch.stable_hash(),
        "resolution": arch.r,
        "width_mult": w,
        "flops_m": stats.flops_m,
        "params": stats.params,
        "peak_memory_mb": stats.peak_memory_bytes / 2**20,
        "weights": weights,
        "supernet": supernet,
        "bn_recalibration": calibrated,
        "backend": {"name": backend.name, **runtime, "timing": vars(backend.timing), "settings": backend.settings},
        "artifact": {
            "files": files,
            "main": artifact.main,
            "input": {
                "name": artifact.input_name,
                "shape": artifact.input_shape,
                "layout": artifact.layout,
                "dtype": "float32",
            },
            "output": {"name": artifact.output_name, "shape": artifact.output_shape, "meaning": "logits, 1000 classes"},
            "preprocessing": preprocessing(arch.r),
        },
        "predicted_latency": predicted,
        "reference": reference,
        "verification": verification,
        "checksums": {name: sha256(out / name) for name in files},
        "measurements": [],
    }
    write_manifest(out, manifest)
    if not verification["passed"]:
        raise OFADeployError(
            f"{out}: the compiled artifact differs from torch by {verification['max_abs_diff']:.2e} "
            f"(> {VERIFY_TOLERANCE}); the bundle is kept for inspection but should not be shipped"
        )
    return CompileResult(out, manifest)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------- read and check


def _field(manifest: dict[str, Any], dotted: str) -> Any:
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a bundle directory")
    if not path.is_file():
        raise BadInputError(f"{path}: missing; is {directory} a bundle written by `ofa-deploy compile`?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise BadInputError(f"{path}: a manifest must be a JSON object")
    for dotted in REQUIRED_FIELDS:
        try:
            _field(manifest, dotted)
        except KeyError:
            raise BadInputError(f"{path}: missing field '{dotted}'") from None
    if manifest["format"] != FORMAT:
        raise BadInputError(f"{path}: unknown bundle format {manifest['format']!r} (expected {FORMAT})")
    return manifest


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    """Refuse a bundle whose files were changed, removed, or are not listed."""
    listed = manifest["checksums"]
    for name in manifest["artifact"]["files"]:
        if name not in listed:
            raise BadInputError(f"{directory}: '{name}' has no checksum in the manifest; refusing the bundle")
    for name, expected in listed.items():
        path = directory / name
        if not path.is_file():
            raise BadInputError(f"{directory}: '{name}' is missing; refusing the bundle")
        if sha256(path) != expected:
            raise BadInputError(
                f"{directory}: '{name}' does not match its sha256 in the manifest (modified or corrupted); "
                "refusing the bundle: compile it again"
            )


def artifact_of(manifest: dict[str, Any]) -> Artifact:
    a = manifest["artifact"]
    model_files = [f for f in a["files"] if f != "arch.json"]
    return Artifact(
        model_files,
        a["input"]["name"],
        list(a["input"]["shape"]),
        a["input"]["layout"],
        a["output"]["name"],
        list(a["output"]["shape"]),
    )


# ---------------------------------------------------------------------- benchmark


def open_bundle(directory: Path) -> dict[str, Any]:
    """The manifest of a bundle whose files all match their checksums (else BadInputError)."""
    manifest = read_manifest(directory)
    verify_checksums(directory, manifest)
    return manifest


def benchmark_bundle(
    directory: Path, backend: Backend, table: LatencyTable | None = None, manifest: dict[str, Any] | None = None
) -> tuple[dict[str, Any], LatencyStats]:
    """Time the bundle's artifact, compare with its prediction, append the result to the manifest.
    ``manifest``: one already returned by :func:`open_bundle` (else the bundle is opened here)."""
    manifest = manifest if manifest is not None else open_bundle(directory)
    artifact = artifact_of(manifest)
    if backend.artifact_suffix != Path(artifact.main).suffix:
        raise BadInputError(
            f"{directory}: the bundle was compiled for '{manifest['backend']['name']}' ({artifact.main}); "
            f"backend '{backend.name}' cannot run it"
        )
    backend.check()
    arch = Arch.from_dict(manifest["arch"], source=str(directory / MANIFEST))
    predicted = manifest.get("predicted_latency")
    reference_info = manifest.get("reference")
    if table is not None:
        predicted = _prediction(table, arch, manifest["width_mult"])
        reference_info = table.metadata.get("reference")
    reference = load_reference(backend, reference_info)
    stats = backend.benchmark(directory, artifact, reference)
    result: dict[str, Any] = {
        "date": _now(),
        "backend": backend.name,
        "runtime": backend.runtime_info(),
        "threads": backend.timing.threads,
        "latency_ms": {
            "mean": stats.mean,
            "median": stats.median,
            "p90": stats.p90,
            "p99": stats.p99,
            "std": stats.std,
            "min": stats.min,
            "count": stats.count,
        },
        "measured_ms": stats.estimate,
        "measured_raw_ms": stats.raw_estimate,
        "normalised_by_reference": reference is not None,
        "predicted_ms": None if predicted is None else predicted["ms"],
    }
    if predicted is not None:
        result["ratio_measured_to_predicted"] = stats.estimate / predicted["ms"]
        result["error_percent"] = 100.0 * (predicted["ms"] - stats.estimate) / stats.estimate
    manifest.setdefault("measurements", []).append(result)
    write_manifest(directory, manifest)
    return result, stats
