"""Typed backend settings: each backend declares a dataclass; profiles and flags are parsed into it once.

A field's ``metadata["help"]`` documents it (shown by ``ofa-deploy devices --json`` and in the
docs). Values are checked against the field's type (bool, int, float, str, or one of these or
None); a wrong type, an unknown name or a failing ``validate()`` is one :class:`BadInputError`
naming the source (profile file, ``--flag``) and the field.
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


def setting(default: Any, help: str) -> Any:
    """A settings field with its documentation."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class BackendSettings:
    """Base class of every backend's settings (a backend without settings uses it as is)."""

    def validate(self) -> None:
        """Check relations between fields; raise ``ValueError("field: what is wrong")``."""

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
