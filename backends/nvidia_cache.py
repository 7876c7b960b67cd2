"""Serialized TensorRT engines and the builder's timing cache, kept on disk between runs.

Building an engine takes seconds to minutes (TensorRT times many kernel tactics); profiling builds
one per operator and is resumable, so a rerun must not build them again. An engine is valid only
for the exact ONNX model, the build settings (precision, batch shapes, workspace), the TensorRT
version and the GPU model it was built on, so all of these make up its key. The timing cache (the
tactic timings TensorRT measured) is shared by every build on one GPU model and TensorRT version:
kernels seen for one operator are not timed again for the next. Files are written atomically, so
an interrupted build never leaves half an engine behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.files import atomic_write_bytes


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ofa-deploy/tensorrt`` (else ``~/.cache/ofa-deploy/tensorrt``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ofa-deploy" / "tensorrt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def engine_key(onnx: bytes, build_settings: dict[str, Any], tensorrt_version: str, gpu_tag: str) -> str:
    """The cache key of one engine: a hash of everything the serialized engine depends on."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(onnx).digest())
    digest.update(json.dumps(build_settings, sort_keys=True).encode())
    digest.update(f"\0{tensorrt_version}\0{gpu_tag}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineCache:
    """Engines by key, and one timing cache per (TensorRT version, GPU model), under ``directory``."""

    directory: Path
    tensorrt_version: str
    gpu_tag: str

    @property
    def timing_cache_path(self) -> Path:
        return self.directory / f"timing-{_slug(self.tensorrt_version)}-{_slug(self.gpu_tag)}.cache"

    def engine_path(self, key: str) -> Path:
        return self.directory / "engines" / f"{key}.engine"

    def key(self, onnx: bytes, build_settings: dict[str, Any]) -> str:
        return engine_key(onnx, build_settings, self.tensorrt_version, self.gpu_tag)

    def load_engine(self, key: str) -> bytes | None:
        path = self.engine_path(key)
        try:
            return path.read_bytes()
        except OSError:
            return None

    def store_engine(self, key: str, engine: bytes) -> Path:
        path = self.engine_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, engine)
        return path

    def load_timing_cache(self) -> bytes:
        """The shared timing cache (empty when none was written yet or it cannot be read)."""
        try:
            return self.timing_cache_path.read_bytes()
        except OSError:
            return b""

    def store_timing_cache(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.timing_cache_path, data)
