"""What a latency table records about where its values came from, read once into typed fields.

Every field is checked when a table is loaded; a missing, unknown or mistyped field is one
:class:`BadInputError` naming the file and the field (exit 2), never a KeyError later.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ofa_deploy import __version__
from ofa_deploy.backend.fingerprint import TargetFingerprint
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.errors import BadInputError, short_repr
from ofa_deploy.space.arch import RESOLUTIONS, check_width_mult

OFFICIAL, CONVERTED = "official", "converted"  # ``format``: an official YAML table, or a toolkit copy of one
TIMED, ESTIMATED = "timed", "estimated"  # ``measurement``: timed on the target, or from an analytical model


def finite_number(value: Any) -> bool:
    """A JSON/YAML number (not a bool) that is finite as a float: NaN, inf and integers beyond the
    float range (``10**400``, which ``math.isfinite`` cannot even convert) are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` for an error line about a table, cut shorter than elsewhere (40 characters)."""
    return short_repr(value, limit)


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the second (how tables and records date things)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ReferenceInfo:
    """The drift reference operator and its latency when the table was profiled."""

    key: str
    baseline_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "baseline_ms": self.baseline_ms}


@dataclass
class DriftPoint:
    """The reference's raw latency after ``after_keys`` keys, ``t`` seconds into profiling."""

    after_keys: int
    ms: float | None
    t: float


@dataclass
class TableMetadata:
    """Where a table's values came from: target, runtime, timing and settings, reference, drift, how it was made."""

    device: str | None = None
    backend: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    timing: TimingOptions | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    measurement: str = TIMED
    width_mult: float | None = None
    resolutions: list[int] = field(default_factory=list)
    date: str | None = None
    toolkit_version: str | None = None
    value_field: str = "mean"  # the record field predictions sum (the official tables' "mean")
    reference: ReferenceInfo | None = None
    call_overhead_ms: float | None = None
    drift: list[DriftPoint] = field(default_factory=list)
    format: str | None = None
    converted_from: str | None = None
    model_parameters: dict[str, Any] | None = None  # an analytical backend's fitted parameters
    target: dict[str, Any] | None = None  # what the backend's check() detailed (e.g. GPU, driver, batch size)
    conditions: dict[str, Any] | None = None  # the target's conditions before/after profiling (e.g. GPU clocks)
    fit: dict[str, Any] | None = None  # a table fitted from end-to-end measurements: method, count, held-out error
    fleet: dict[str, Any] | None = None  # a table profiled in shards over several devices: devices, spread, outliers

    def fingerprint(self) -> TargetFingerprint:
        """The target this table was measured (or estimated) on."""
        runtime = {"runtime": self.runtime, "runtime_version": self.runtime_version, **(self.target or {})}
        return TargetFingerprint.of(
            self.backend, self.device, runtime, threads=self.threads, precision=self.settings.get("precision")
        )

    @classmethod
    def new(cls, **fields: Any) -> TableMetadata:
        """Metadata of a table being written now by this toolkit version."""
        return cls(date=utc_now(), toolkit_version=__version__, **fields)

    @property
    def is_official(self) -> bool:
        return self.format == OFFICIAL

    @property
    def estimated(self) -> bool:
        return self.measurement == ESTIMATED

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: Any, source: str) -> TableMetadata:
        where = f"{source}: metadata"
        if not isinstance(data, dict):
            raise BadInputError(f"{where} must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise BadInputError(f"{where} has unknown field(s) {sorted(unknown)}")

        def get(name: str, kinds: type | tuple[type, ...], default: Any = None) -> Any:
            value = data.get(name)
            if value is None:  # absent or null: the default
                return default
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise BadInputError(f"{where}: field '{name}' has the wrong type ({type(value).__name__})")
            return value

        reference = get("reference", dict)
        if reference is not None:
            try:
                reference = ReferenceInfo(str(reference["key"]), float(reference["baseline_ms"]))
            except (KeyError, TypeError, ValueError, OverflowError):
                raise BadInputError(f"{where}: field 'reference' needs 'key' and a numeric 'baseline_ms'") from None
            if not (math.isfinite(reference.baseline_ms) and reference.baseline_ms > 0):
                raise BadInputError(
                    f"{where}: field 'reference' has baseline_ms={reference.baseline_ms!r} "
                    "(must be a finite number > 0)"
                )
        drift = []
        for point in get("drift", list, []):
            try:
                ms = point.get("ms")
                drift.append(DriftPoint(int(point["after_keys"]), None if ms is None else float(ms), float(point["t"])))
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
                raise BadInputError(f"{where}: field 'drift' holds an invalid entry {shown(point)}") from None
            if drift[-1].ms is not None and not (math.isfinite(drift[-1].ms) and drift[-1].ms >= 0):
                raise BadInputError(f"{where}: field 'drift' holds an invalid latency ms={drift[-1].ms!r}")
        timing = get("timing", dict)
        resolutions = get("resolutions", list, [])
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in resolutions):
            raise BadInputError(f"{where}: field 'resolutions' must list integers")
        outside = [r for r in resolutions if r not in RESOLUTIONS]
        if outside:
            raise BadInputError(
                f"{where}: field 'resolutions' holds {outside[0]}, not a resolution of the space "
                f"({RESOLUTIONS[0]}..{RESOLUTIONS[-1]} step 4)"
            )
        measurement = get("measurement", str, TIMED)
        if measurement not in (TIMED, ESTIMATED):
            raise BadInputError(f"{where}: field 'measurement' must be '{TIMED}' or '{ESTIMATED}'")
        overhead = get("call_overhead_ms", (int, float))
        if overhead is not None and not (finite_number(overhead) and overhead >= 0):
            raise BadInputError(
                f"{where}: field 'call_overhead_ms' is {shown(overhead)} (must be a finite number >= 0 ms)"
            )
        threads = get("threads", int)
        if threads is not None and threads < 1:
            raise BadInputError(f"{where}: field 'threads' is {shown(threads)} (must be a positive integer)")
        width = get("width_mult", (int, float))
        if width is not None:
            if not finite_number(width):
                raise BadInputError(f"{where}: field 'width_mult' is {shown(width)} (must be one of 1.0, 1.2)")
            width = check_width_mult(width, f"{where}: field 'width_mult'")
        return cls(
            device=get("device", str),
            backend=get("backend", str),
            runtime=get("runtime", str),
            runtime_version=get("runtime_version", str),
            threads=threads,
            timing=None if timing is None else TimingOptions.from_dict(timing, where),
            settings=dict(get("settings", dict, {})),  # null: no settings
            measurement=measurement,
            width_mult=None if width is None else float(width),
            resolutions=list(resolutions),
            date=get("date", str),
            toolkit_version=get("toolkit_version", str),
            value_field=get("value_field", str, "mean"),
            reference=reference,
            call_overhead_ms=None if overhead is None else float(overhead),
            drift=drift,
            format=get("format", str),
            converted_from=get("converted_from", str),
            model_parameters=get("model_parameters", dict),
            target=get("target", dict),
            conditions=get("conditions", dict),
            fit=get("fit", dict),
            fleet=get("fleet", dict),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (fields that are unset are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, (TimingOptions, ReferenceInfo)):
                value = value.to_dict()
            elif f.name == "drift":
                value = [dataclasses.asdict(p) for p in value]
            out[f.name] = value
        return out
