"""Typed backend settings: each backend declares a dataclass; profiles and flags are parsed into it once.

A field's ``metadata["help"]`` documents it (shown by ``ofa-deploy devices --json`` and in the
docs), and ``metadata["kind"]`` classifies it, so that one rule, here, decides what a latency table
or a bundle may carry:

* :data:`MEASUREMENT`: what a measurement depended on (precision, delegate, TVM target, batch size,
  ...). Recorded in LUTs and manifests, and read back from them.
* :data:`LOCAL`: where things live on this host or on the device, which device to use and how to
  reach it (paths, serials, keys, binaries, directories, clean-up, connection fields and timeouts).
  Never recorded; taken only from the user's flags, the device profile and the environment. One
  found in a file (older versions recorded them) is ignored: :meth:`BackendSettings.from_record`.

Values are checked against the field's type (bool, int, float, str, or one of these or None); a
wrong type, an unknown name or a failing ``validate()`` is one :class:`BadInputError` naming the
source (profile file, ``--flag``) and the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from ofa_deploy.errors import BadInputError, short_repr

S = TypeVar("S", bound="BackendSettings")
MEASUREMENT = "measurement"  # recorded in LUTs and bundles, may be read back from them
LOCAL = "local"  # this host's or the device's locations, which device, how to reach it: never recorded
KINDS = (MEASUREMENT, LOCAL)


def setting(default: Any, help: str, kind: str = MEASUREMENT) -> Any:
    """A settings field with its documentation and its kind (:data:`MEASUREMENT` or :data:`LOCAL`)."""
    if kind not in KINDS:
        raise ValueError(f"setting kind must be one of {KINDS}, got {kind!r}")
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind})


def _kind(f: dataclasses.Field) -> str:
    return f.metadata.get("kind", MEASUREMENT)  # a plain dataclass field (a plugin's) is a measurement one


@dataclasses.dataclass(frozen=True)
class BackendSettings:
    """Base class of every backend's settings (a backend without settings uses it as is)."""

    def validate(self) -> None:
        """Check relations between fields; raise ``ValueError("field: what is wrong")``."""

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    @classmethod
    def local_fields(cls) -> frozenset[str]:
        """Names of the :data:`LOCAL` settings (never recorded, never read back from a file)."""
        return frozenset(f.name for f in dataclasses.fields(cls) if _kind(f) == LOCAL)

    def to_dict(self) -> dict[str, Any]:
        """Every setting: the full configuration, e.g. to rebuild the backend in another process."""
        return dataclasses.asdict(self)

    def recorded(self) -> dict[str, Any]:
        """What a LUT or a bundle records: the :data:`MEASUREMENT` settings only."""
        local = self.local_fields()
        return {k: v for k, v in self.to_dict().items() if k not in local}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Settings a LUT or a bundle recorded, split into those that may be applied (every name but
        the :data:`LOCAL` ones) and the names of the local ones found with a value other than their
        default (recorded by older versions; the caller warns once that they are ignored)."""
        local = cls.local_fields()
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k not in local}
        ignored = sorted(k for k, v in data.items() if k in local and v is not None and v != defaults[k])
        return kept, ignored


def _coerce(name: str, value: Any, hint: Any) -> Any:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{name}: a value is required")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ValueError(f"{name}: expected a finite number, got {short_repr(value)}")
            return number
        if option is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{name}: expected {expected}, got {short_repr(value)}")


def parse_settings(cls: type[S], data: Mapping[str, Any] | None, source: str) -> S:
    """``data`` (a profile's ``settings``, flags) as an instance of ``cls``; BadInputError on any fault."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        names = sorted(unknown, key=str)  # YAML keys need not be strings
        raise BadInputError(f"{source}: unknown setting(s) {names}; known: {sorted(fields) or 'none'}")
    hints = typing.get_type_hints(cls)
    try:
        values = {name: _coerce(name, value, hints[name]) for name, value in data.items()}
        instance = cls(**values)
        instance.validate()
    except ValueError as exc:  # one line, whatever a backend's validate() quoted
        text = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        raise BadInputError(f"{source}: setting {text}") from None
    return instance
