"""The bundle manifest (``manifest.json``): one schema, written and read by :class:`Manifest`.

:meth:`Manifest.create` lays out the document ``compile`` writes, from typed values, and reads it
back through :meth:`Manifest.parse`, the same checks every later reader runs (each names the
field it refuses). The document is kept whole (``document``): fields this version does not
interpret are preserved when a benchmark result is appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ofa_deploy import __version__
from ofa_deploy.backend.artifact import Artifact
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.deploy.integrity import bundle_member, check_digest
from ofa_deploy.errors import BadInputError
from ofa_deploy.latency.metadata import ReferenceInfo
from ofa_deploy.nn.data import preprocessing
from ofa_deploy.space.analytics import ArchStats
from ofa_deploy.space.arch import Arch, check_width_mult

if TYPE_CHECKING:
    from ofa_deploy.backend.interface import Backend

FORMAT = "ofa-deploy-bundle/3"
MANIFEST = "manifest.json"


def _get(document: dict[str, Any], dotted: str, kind: type | tuple[type, ...], path: Path, optional: bool = False):
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            if optional:
                return None
            raise BadInputError(f"{path}: missing field '{dotted}'")
        value = value[part]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadInputError(f"{path}: field '{dotted}' has the wrong type ({type(value).__name__})")
    return value


@dataclass
class Manifest:
    """A bundle's ``manifest.json``: the fields the toolkit uses, typed and checked, plus the whole document."""

    path: Path
    document: dict[str, Any]
    arch: Arch
    width_mult: float
    backend_name: str
    timing: TimingOptions | None
    artifact: Artifact
    checksums: dict[str, str]
    predicted_latency: dict[str, Any] | None
    reference: ReferenceInfo | None
    verified_with: Path | None = None  # the public key its signature verified with (open_bundle), if any

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        arch: Arch,
        width_mult: float,
        stats: ArchStats,
        backend: Backend,
        runtime: dict[str, Any],
        artifact: Artifact,
        device: str | None = None,
        checksums: dict[str, str],
        verification: dict[str, Any],
        weights: str,
        supernet: dict[str, str] | None = None,
        bn_recalibration: dict[str, Any] | None = None,
        predicted_latency: dict[str, Any] | None = None,
        reference: ReferenceInfo | None = None,
    ) -> Manifest:
        """The manifest of a new bundle (``checksums`` lists every file in it, ``arch.json`` included),
        read back through :meth:`parse`: what is written is what every reader will accept."""
        document = {
            "format": FORMAT,
            "toolkit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "arch": arch.to_dict(),
            "arch_hash": arch.stable_hash(),
            "resolution": arch.r,
            "width_mult": width_mult,
            "flops_m": stats.flops_m,
            "params": stats.params,
            "peak_memory_mb": stats.peak_memory_bytes / 2**20,
            "weights": weights,
            "supernet": supernet,
            "bn_recalibration": bn_recalibration,
            "backend": {
                "name": backend.name,
                "kind": backend.kind.value,
                **runtime,
                "device_profile": device,
                "timing": backend.timing.to_dict(),
                "settings": backend.settings.recorded(),  # measurement settings only: never paths, serials, keys
            },
            "artifact": {
                "kind": artifact.kind,
                "files": list(checksums),
                "main": artifact.main,
                "details": artifact.details,
                "input": {
                    "name": artifact.input_name,
                    "shape": artifact.input_shape,
                    "layout": artifact.layout,
                    "dtype": "float32",
                },
                "output": {
                    "name": artifact.output_name,
                    "shape": artifact.output_shape,
                    "meaning": f"logits, {artifact.output_shape[-1]} classes",
                },
                "preprocessing": preprocessing(arch.r),
            },
            "predicted_latency": predicted_latency,
            "reference": reference.to_dict() if reference is not None else None,
            "verification": verification,
            "checksums": checksums,
            "measurements": [],
        }
        return cls.parse(document, path)

    @classmethod
    def parse(cls, document: Any, path: Path) -> Manifest:
        if not isinstance(document, dict):
            raise BadInputError(f"{path}: a manifest must be a JSON object")
        fmt = _get(document, "format", str, path)
        if fmt != FORMAT:
            hint = (
                " (written by an older ofa-deploy: compile the bundle again)" if fmt.startswith("ofa-deploy-") else ""
            )
            raise BadInputError(f"{path}: unknown bundle format {fmt!r}, expected {FORMAT}{hint}")
        arch = Arch.from_dict(_get(document, "arch", dict, path), source=f"{path}: field 'arch'")
        width_mult = check_width_mult(_get(document, "width_mult", (int, float), path), f"{path}: field 'width_mult'")
        files = _get(document, "artifact.files", list, path)
        if not files or not all(isinstance(f, str) for f in files):
            raise BadInputError(f"{path}: field 'artifact.files' must be a non-empty list of file names")
        checksums = _get(document, "checksums", dict, path)
        model_files = [f for f in files if f != "arch.json"]
        artifact = Artifact(
            kind=_get(document, "artifact.kind", str, path),
            files=model_files,
            input_name=_get(document, "artifact.input.name", str, path),
            input_shape=list(_get(document, "artifact.input.shape", list, path)),
            layout=_get(document, "artifact.input.layout", str, path),
            output_name=_get(document, "artifact.output.name", str, path),
            output_shape=list(_get(document, "artifact.output.shape", list, path)),
            details=_get(document, "artifact.details", dict, path, optional=True) or {},
        )
        timing = _get(document, "backend.timing", dict, path, optional=True)
        reference = None
        if _get(document, "reference", dict, path, optional=True) is not None:
            reference = ReferenceInfo(
                _get(document, "reference.key", str, path),
                float(_get(document, "reference.baseline_ms", (int, float), path)),
            )
        return cls(
            path=path,
            document=document,
            arch=arch,
            width_mult=width_mult,
            backend_name=_get(document, "backend.name", str, path),
            timing=TimingOptions.from_dict(timing, f"{path}: backend") if timing is not None else None,
            artifact=artifact,
            checksums=checksums,
            predicted_latency=_get(document, "predicted_latency", dict, path, optional=True),
            reference=reference,
        )

    @property
    def files(self) -> list[str]:
        return list(self.document["artifact"]["files"])


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of bundle ``directory``: parsed, its digest checked, every file it names inside the bundle.
    File checksums and the signature are :func:`~ofa_deploy.deploy.bundle.open_bundle`'s."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a bundle directory")
    if not path.is_file():
        raise BadInputError(f"{path}: missing; is {directory} a bundle written by `ofa-deploy compile`?")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable manifest ({exc})") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting deeper than the stack
        raise BadInputError(f"{path}: not a usable manifest ({type(exc).__name__})") from None
    manifest = Manifest.parse(document, path)
    check_digest(document, path)
    for name in manifest.files:
        bundle_member(directory, name, path)
    return manifest
