"""Target fingerprints: which target a number belongs to, and whether two numbers may be compared.

A latency table, a bundle and every benchmark record name the target they were made on: the
backend, the device profile, the runtime and its version, the thread count, the precision, and
what the target said about itself (phone model and SoC, GPU, board, CPU). Before a number from one
target is set against a target of another kind (a prediction recorded into a bundle, a benchmark
of a bundle, a measurement against a prediction), :func:`check_same_target` compares the two: a
difference that changes latency stops the command (exit 2, both sides named) unless the user
allows it, and a compatible one (a runtime's minor or patch version) is one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ofa_deploy.errors import BadInputError

log = logging.getLogger(__name__)

ALLOW_FLAG = "--allow-target-mismatch"
# what a target says about itself (backend check() details) that tells one device from another
IDENTITY_KEYS = ("manufacturer", "model", "platform", "gpu", "compute_capability", "board", "cpu")


@dataclass(frozen=True)
class TargetFingerprint:
    """The target a table, bundle or measurement belongs to; None where a record does not say."""

    backend: str | None = None
    device: str | None = None  # the device profile's name
    runtime: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    precision: str | None = None
    identity: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, backend: str | None, device: str | None, runtime: Mapping[str, Any], **known: Any) -> TargetFingerprint:
        """From a backend's ``check()`` (or a record of it: a manifest's ``backend`` section, a table's
        ``target``), with the facts the record keeps elsewhere (``threads``, ``precision``)."""
        identity = {key: str(runtime[key]) for key in IDENTITY_KEYS if runtime.get(key) not in (None, "")}
        return cls(
            backend=backend,
            device=device,
            runtime=runtime.get("runtime"),
            runtime_version=runtime.get("runtime_version"),
            threads=known.get("threads", runtime.get("threads")),
            precision=known.get("precision"),
            identity=identity,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record form (measurement files, reports): every field, the identity as a mapping."""
        return {
            "backend": self.backend,
            "device": self.device,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "threads": self.threads,
            "precision": self.precision,
            "identity": dict(self.identity),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> TargetFingerprint:
        """Read back :meth:`to_dict` (a measurement line's ``target``); BadInputError naming ``source``."""
        if not isinstance(data, dict):
            raise BadInputError(f"{source}: 'target' must be a JSON object, not {type(data).__name__}")
        identity = data.get("identity") or {}
        threads = data.get("threads")
        texts = [data.get(k) for k in ("backend", "device", "runtime", "runtime_version", "precision")]
        if (
            not isinstance(identity, dict)
            or not all(v is None or isinstance(v, str) for v in [*texts, *identity.values()])
            or not (threads is None or (type(threads) is int and threads > 0))
        ):
            raise BadInputError(f"{source}: 'target' is not a target record (texts, a thread count, an identity)")
        backend, device, runtime, runtime_version, precision = texts
        return cls(
            backend, device, runtime, runtime_version, threads, precision, {str(k): v for k, v in identity.items()}
        )

    def describe(self) -> str:
        """One phrase for an error line: device profile, backend, runtime and threads."""
        parts = [
            f"device '{self.device}'" if self.device else None,
            f"backend {self.backend}" if self.backend else None,
        ]
        if self.runtime:
            parts.append(f"{self.runtime} {self.runtime_version or ''}".strip())
        if self.threads is not None:
            parts.append(f"{self.threads} thread(s)")
        if self.precision:
            parts.append(self.precision)
        return ", ".join(p for p in parts if p) or "an unnamed target"


def differences(recorded: TargetFingerprint, current: TargetFingerprint) -> tuple[list[str], list[str]]:
    """What differs between two fingerprints where both say: (differences that change latency,
    compatible ones). A runtime's major version changes latency; its minor or patch version does not."""
    changing: list[str] = []
    compatible: list[str] = []
    for name in ("backend", "device", "runtime", "threads", "precision"):
        a, b = getattr(recorded, name), getattr(current, name)
        if a is not None and b is not None and a != b:
            changing.append(f"{name} {a} vs {b}")
    a, b = recorded.runtime_version, current.runtime_version
    if a and b and a != b and recorded.runtime == current.runtime:
        (changing if _major(a) != _major(b) else compatible).append(f"{recorded.runtime or 'runtime'} {a} vs {b}")
    for key in IDENTITY_KEYS:
        a, b = recorded.identity.get(key), current.identity.get(key)
        if a and b and a != b:
            changing.append(f"{key} {a} vs {b}")
    return changing, compatible


def _major(version: str) -> str:
    return version.strip().lstrip("v").split(".")[0]


def check_same_target(
    what: str, recorded: TargetFingerprint, here: str, current: TargetFingerprint, allow: bool = False
) -> list[str]:
    """Refuse to set ``what`` (made on ``recorded``) against ``here`` (``current``) when the targets
    differ in a way that changes latency: one line, exit 2, both sides named. ``allow``: go on and
    return the differences, for the record to note. Compatible differences are one warning."""
    changing, compatible = differences(recorded, current)
    if compatible:
        log.warning("warning: %s was made with %s; %s: %s", what, "; ".join(compatible), here, current.describe())
    if changing and not allow:
        raise BadInputError(
            f"{what} belongs to another target ({recorded.describe()}) than {here} ({current.describe()}): "
            f"{'; '.join(changing)}; its numbers do not hold there (give {ALLOW_FLAG} to compare anyway)"
        )
    if changing:
        log.warning("warning: %s: %s (%s given)", what, "; ".join(changing), ALLOW_FLAG)
    return changing


def fingerprint_of_backend(backend: Any, device: str | None, runtime: Mapping[str, Any]) -> TargetFingerprint:
    """The target ``backend`` (a :class:`~ofa_deploy.backend.interface.Backend`, configured from device
    profile ``device``) measures on, with ``runtime`` its ``check()``."""
    settings = backend.settings.to_dict()
    return TargetFingerprint.of(
        backend.name, device, runtime, threads=backend.timing.threads, precision=settings.get("precision")
    )


def fingerprint_of_identity(identity: Mapping[str, Any]) -> TargetFingerprint:
    """The target of a table as a manifest records it (``LatencyTable.identity()``)."""
    return TargetFingerprint.of(
        identity.get("backend"),
        identity.get("device"),
        identity,
        threads=identity.get("threads"),
        precision=identity.get("precision"),
    )
