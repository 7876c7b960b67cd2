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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.backend.build_cache import BuildCache, content_key, user_cache_dir
from ofa_deploy.files import atomic_write_bytes


def default_cache_dir() -> Path:
    """``tensorrt`` in the user's ofa-deploy cache (:func:`~ofa_deploy.backend.build_cache.user_cache_dir`)."""
    return user_cache_dir("tensorrt")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def engine_key(onnx: bytes, build_settings: dict[str, Any], tensorrt_version: str, gpu_tag: str) -> str:
    """The cache key of one engine: a hash of everything the serialized engine depends on."""
    return content_key(onnx, {"build": build_settings, "tensorrt": tensorrt_version, "gpu": gpu_tag})


@dataclass(frozen=True)
class EngineCache:
    """Engines by key, and one timing cache per (TensorRT version, GPU model), under ``directory``."""

    directory: Path
    tensorrt_version: str
    gpu_tag: str

    @property
    def timing_cache_path(self) -> Path:
        return self.directory / f"timing-{_slug(self.tensorrt_version)}-{_slug(self.gpu_tag)}.cache"

    @property
    def engines(self) -> BuildCache:
        return BuildCache(self.directory / "engines", ".engine")

    def engine_path(self, key: str) -> Path:
        return self.engines.path(key)

    def key(self, onnx: bytes, build_settings: dict[str, Any]) -> str:
        return engine_key(onnx, build_settings, self.tensorrt_version, self.gpu_tag)

    def load_engine(self, key: str) -> bytes | None:
        return self.engines.load(key)

    def store_engine(self, key: str, engine: bytes) -> Path:
        return self.engines.store(key, engine)

    def load_timing_cache(self) -> bytes:
        """The shared timing cache (empty when none was written yet or it cannot be read)."""
        try:
            return self.timing_cache_path.read_bytes()
        except OSError:
            return b""

    def store_timing_cache(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.timing_cache_path, data)
