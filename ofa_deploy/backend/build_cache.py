"""Built artifacts kept on disk between runs, addressed by the bytes they were built from.

A backend that compiles every operator before timing it (TVM libraries, TensorRT engines) builds
the same thing again and again: when a killed profile resumes, when a second board of the same
kind is profiled, when ``validate`` or ``compile`` meets a network built before. A build depends
only on its source (the ONNX bytes, weights included) and on what built it (the target, the
compiler and their versions), so a hash of both names the result. Files are written atomically:
a killed build leaves no half-written entry, and two processes storing the same key both succeed.

Where: ``$OFA_DEPLOY_CACHE_DIR``, else ``$XDG_CACHE_HOME/ofa-deploy``, else ``~/.cache/ofa-deploy``.
The cache is trusted like the rest of the user's home: a library found there is loaded, not
rebuilt (SECURITY.md). It is kept under :data:`MAX_BYTES` by :meth:`BuildCache.prune` (the least
recently used entries go first); deleting the directory is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.files import atomic_write_bytes

CACHE_ENV = "OFA_DEPLOY_CACHE_DIR"
MAX_BYTES = 4 * 2**30  # per cache folder: TVM libraries of every key of the space, four targets' worth


def user_cache_dir(*parts: str) -> Path:
    """This user's ofa-deploy cache (see the module docstring), joined with ``parts``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        base = Path(explicit).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ofa-deploy"
    return base.joinpath(*parts)


def content_key(source: bytes, identity: dict[str, Any]) -> str:
    """A hash of ``source`` and of everything else the built result depends on (``identity``)."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(source).digest())
    digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildCache:
    """Files named ``<key><suffix>`` under ``directory``."""

    directory: Path
    suffix: str

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{self.suffix}"

    def load(self, key: str) -> bytes | None:
        """The stored bytes, or None when there are none (or they cannot be read). A hit counts as a
        use: :meth:`prune` removes the entries used longest ago."""
        path = self.path(key)
        try:
            data = path.read_bytes()
            os.utime(path)
        except OSError:
            return None
        return data

    def store(self, key: str, data: bytes) -> Path:
        path = self.path(key)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return path

    def prune(self, max_bytes: int = MAX_BYTES) -> int:
        """Remove the least recently used entries until the folder holds at most ``max_bytes``; the
        number removed. Another process may prune or store at the same time: a file gone is fine."""
        entries = []
        for path in self.directory.glob(f"*{self.suffix}"):
            try:
                info = path.stat()
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in sorted(entries):
            if total <= max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
            total -= size
        return removed
