"""Deployment records: one JSON file per device in ``BUNDLE/deployments/<device>.json``.

A record says what was installed where and how it went: the device's identity, when, the
artifact's sha256 and the hashes the device itself computed, the latency measured there against
the bundle's prediction, and a status with its reason. Records are written atomically, so a run
interrupted on one device never leaves a half-written file, and the next run reads them to skip
devices that already hold the same bundle.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_json

RECORDS_DIR = "deployments"

# statuses
DEPLOYED = "deployed"  # installed, verified on the device, benchmarked (and within tolerance, if predicted)
SKIPPED = "skipped"  # the device already holds the same files and a completed deployment is recorded
OUT_OF_TOLERANCE = "out-of-tolerance"  # installed and verified, but the latency is off the prediction
HASH_MISMATCH = "hash-mismatch"  # the device's sha256 of a pushed file differs from the bundle's
UNREACHABLE = "unreachable"  # could not connect, or the device went away
FAILED = "failed"  # any other error (message in ``reason``)
TARGET_MISMATCH = "target-mismatch"  # the device is another target than the bundle's prediction: nothing installed
WOULD_INSTALL, WOULD_SKIP = "would-install", "would-skip"  # --dry-run

COMPLETED = (DEPLOYED, SKIPPED, OUT_OF_TOLERANCE)  # the files are on the device and verified
STATUSES = (
    DEPLOYED,
    SKIPPED,
    OUT_OF_TOLERANCE,
    HASH_MISMATCH,
    UNREACHABLE,
    FAILED,
    TARGET_MISMATCH,
    WOULD_INSTALL,
    WOULD_SKIP,
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def device_file_name(device: str) -> str:
    """A file name for a device id (``127.0.0.1:5555`` -> ``127.0.0.1_5555``)."""
    name = _UNSAFE.sub("_", device).strip("._") or "device"
    return name[:120]


def require_distinct_devices(devices: Sequence[str], what: str = "device") -> None:
    """BadInputError unless every id is named once and gets a file name of its own (records and shards
    are kept per device: ``10.0.0.1:5555`` and ``10.0.0.1_5555`` would share one)."""
    if len(set(devices)) != len(devices):
        raise BadInputError(f"{what}: a device is named twice")
    seen: dict[str, str] = {}
    for device in devices:
        other = seen.setdefault(device_file_name(device), device)
        if other != device:
            raise BadInputError(
                f"{what}: devices {other!r} and {device!r} would share one file ({device_file_name(device)}.json) "
                "for their records and shards; name one of them differently"
            )


@dataclass
class DeploymentRecord:
    """What happened on one device: identity, files and hashes, measured vs predicted latency, status and reason."""

    device: str  # the id the user named it by (serial, HOST:PORT)
    status: str
    time: str
    bundle: str
    artifact: str = ""  # the main file
    artifact_sha256: str = ""
    remote_dir: str = ""
    remote_sha256: dict[str, str | None] = field(default_factory=dict)  # file -> hash the device computed
    verified_on_device: bool = False
    identity: dict[str, Any] = field(default_factory=dict)  # what the backend's check() reported
    measured_ms: float | None = None
    latency_ms: dict[str, Any] | None = None
    predicted_ms: float | None = None
    error_percent: float | None = None
    tolerance: float | None = None
    passed: bool | None = None  # against the tolerance; None when nothing was predicted or measured
    reason: str = ""
    seconds: float = 0.0
    host: str = ""  # the machine that talked to the device (a cluster worker, or this one)
    target_mismatch_allowed: list[str] = field(default_factory=list)  # differences from the prediction's target

    @property
    def reached(self) -> bool:
        return self.status != UNREACHABLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DeploymentRecord:
        """A record from plain data read back from a file or sent by a cluster host (neither is
        trusted): every known field must have its type and finite numbers; unknown fields are
        dropped. Raises ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("device", "status", "time", "bundle"):
            if name not in known:
                raise ValueError(f"field '{name}' is missing")
        for name, value in known.items():
            if not _FIELD_CHECKS[name](value):
                raise ValueError(f"field '{name}' has an invalid value of type {type(value).__name__}")
        if known["status"] not in STATUSES:
            raise ValueError(f"field 'status' is not one of {', '.join(STATUSES)}")
        return cls(**known)


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 100_000


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional(check):
    return lambda value: value is None or check(value)


def _json_object(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _hashes(value: Any) -> bool:
    return _json_object(value) and all(v is None or _text(v) for v in value.values())


_FIELD_CHECKS = {
    "device": _text,
    "status": _text,
    "time": _text,
    "bundle": _text,
    "artifact": _text,
    "artifact_sha256": _text,
    "remote_dir": _text,
    "remote_sha256": _hashes,
    "verified_on_device": lambda v: isinstance(v, bool),
    "identity": _json_object,
    "measured_ms": _optional(_number),
    "latency_ms": _optional(_json_object),
    "predicted_ms": _optional(_number),
    "error_percent": _optional(_number),
    "tolerance": _optional(_number),
    "passed": _optional(lambda v: isinstance(v, bool)),
    "reason": _text,
    "seconds": _number,
    "host": _text,
    "target_mismatch_allowed": lambda v: isinstance(v, list) and len(v) <= 100 and all(_text(x) for x in v),
}


def record_path(bundle: Path, device: str) -> Path:
    """Where the record of ``device`` lives: ``BUNDLE/deployments/<device file name>.json``."""
    return Path(bundle) / RECORDS_DIR / f"{device_file_name(device)}.json"


def write_record(bundle: Path, record: DeploymentRecord) -> Path:
    """Write ``record`` atomically into the bundle's deployments folder; returns its path."""
    path = record_path(bundle, record.device)
    atomic_write_json(path, record.to_dict(), indent=2)
    return path


def read_record(bundle: Path, device: str) -> DeploymentRecord | None:
    """The last record for ``device``; None when there is none or it cannot be read (then it is redone)."""
    path = record_path(bundle, device)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        return DeploymentRecord.from_dict(data)
    except ValueError:
        return None
