"""Building blocks for test fixtures that use loopback phones (one or several at once)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.adb_device.server import FakeAdbDevice


@contextlib.contextmanager
def private_adb_env(tmp_path_factory: pytest.TempPathFactory, **variables: str) -> Iterator[pytest.MonkeyPatch]:
    """A private config dir for the ADB key, no serial from the environment, plus ``variables``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        mp.delenv("ANDROID_SERIAL", raising=False)
        for name, value in variables.items():
            mp.setenv(name, value)
        yield mp


@contextlib.contextmanager
def started_phones(tmp_path_factory: pytest.TempPathFactory, count: int) -> Iterator[list[FakeAdbDevice]]:
    """``count`` loopback phones, each with its own file system, stopped on exit."""
    devices = [FakeAdbDevice(tmp_path_factory.mktemp(f"phone{i}")).start() for i in range(count)]
    try:
        yield devices
    finally:
        for device in devices:
            device.stop()


def loopback_profile(
    tmp_path_factory: pytest.TempPathFactory,
    phone: FakeAdbDevice,
    timing: dict[str, int],
    settings: dict[str, Any] | None = None,
    **fields: Any,
) -> Path:
    """A device profile YAML for the loopback phones (r=160, the host's benchmark_model stub); ``settings``
    adds backend settings, ``fields`` top-level profile fields."""
    stub = phone.install_benchmark_stub(tmp_path_factory.mktemp("host-bin"))
    path = tmp_path_factory.mktemp("profile") / "loopback-fleet.yaml"
    doc = {
        "name": "loopback-fleet",
        "description": "loopback ADB devices (tests)",
        "backend": "adb",
        "resolutions": [160],
        "timing": {"threads": 1, "warmup": 1, **timing},
        "settings": {"benchmark_model": str(stub), "retries": 1, "retry_delay_s": 0.05, "connect_timeout_s": 5}
        | (settings or {}),
        **fields,
    }
    path.write_text(yaml.safe_dump(doc))
    return path
