"""The on-disk build cache shared by the compiling backends (ofa_deploy/backend/build_cache.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ofa_deploy.backend.build_cache import CACHE_ENV, BuildCache, content_key, user_cache_dir


def test_the_cache_folder_follows_ofa_deploy_cache_dir_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir("tvm", "libraries") == tmp_path / "mine" / "tvm" / "libraries"
    monkeypatch.delenv(CACHE_ENV)
    assert user_cache_dir("tensorrt") == tmp_path / "xdg" / "ofa-deploy" / "tensorrt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "ofa-deploy"


def test_an_entry_is_found_by_its_source_and_identity_only(tmp_path):
    cache = BuildCache(tmp_path / "libraries", ".so")
    key = content_key(b"onnx bytes", {"target": "llvm"})
    assert cache.load(key) is None
    cache.store(key, b"\x7fELF built")
    assert cache.load(key) == b"\x7fELF built"
    assert cache.load(content_key(b"onnx bytes", {"target": "cuda"})) is None
    assert cache.load(content_key(b"other bytes", {"target": "llvm"})) is None
    assert (tmp_path / "libraries").stat().st_mode & 0o777 == 0o700  # private: its libraries get loaded
    assert [p.name for p in Path(tmp_path / "libraries").iterdir()] == [f"{key}.so"]  # no temporary left


def test_prune_removes_the_least_recently_used_entries_first(tmp_path):
    cache = BuildCache(tmp_path, ".so")
    keys = [content_key(bytes([i]), {}) for i in range(4)]
    for age, key in enumerate(keys):
        path = cache.store(key, b"x" * 100)
        os.utime(path, (1000 + age, 1000 + age))  # stored in this order, oldest first
    assert cache.load(keys[0]) is not None  # a hit is a use: the first entry is now the newest
    assert cache.prune(max_bytes=250) == 2
    assert [cache.load(key) is not None for key in keys] == [True, False, False, True]
    assert cache.prune(max_bytes=250) == 0
