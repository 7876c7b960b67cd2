"""End-to-end latency measurements (``M.jsonl``) and arch lists (``A.jsonl``): JSON Lines files.

Each line of a measurements file is an Arch object (any layout ``Arch.from_dict`` accepts) plus
``"latency_ms"``, a finite number > 0; extra keys (``raw_latency_ms``, ``std_ms``, ``backend``,
``width_mult`` ...) are kept but not required. An arch list is the same without ``latency_ms``.
Blank lines are skipped. A bad line is one :class:`BadInputError` naming the file and the line
number (exit 2); nothing is read past it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_text_file
from ofa_deploy.latency.metadata import finite_number, shown
from ofa_deploy.space.arch import Arch, check_width_mult

LATENCY_FIELD = "latency_ms"


@dataclass
class Measurement:
    """One sub-network and its measured end-to-end latency (ms)."""

    arch: Arch
    latency_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.arch.to_dict(), LATENCY_FIELD: self.latency_ms, **self.extra}


def _lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for every non-blank line; ``where`` is ``path:line``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # a huge integer, nesting deeper than the stack
            raise BadInputError(f"{where}: not usable JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: each line must be a JSON object (an Arch), found {type(data).__name__}")
        yield where, data


def _width_mult(rows: Sequence[tuple[str, dict[str, Any]]], path: Path) -> float | None:
    """The ``width_mult`` the lines declare (one value for the whole file), None if none does."""
    found: tuple[str, float] | None = None
    for where, data in rows:
        if data.get("width_mult") is None:
            continue
        w = check_width_mult(data["width_mult"], f"{where}: width_mult")
        if found is not None and w != found[1]:
            raise BadInputError(f"{path}: {found[0]} says width_mult {found[1]} but {where} says {w}; keep one width")
        found = (where, w)
    return None if found is None else found[1]


def read_archs(path: str | Path) -> tuple[list[Arch], float | None]:
    """The archs of a JSON Lines file, in order, and the width multiplier the lines declare (if any)."""
    path = Path(path)
    rows = list(_lines(path))
    if not rows:
        raise BadInputError(f"{path}: no archs (the file is empty)")
    return [Arch.from_dict(data, source=where) for where, data in rows], _width_mult(rows, path)


def read_measurements(path: str | Path) -> tuple[list[Measurement], float | None]:
    """The measurements of ``M.jsonl`` in order, and the width multiplier the lines declare (if any)."""
    path = Path(path)
    rows = list(_lines(path))
    if not rows:
        raise BadInputError(f"{path}: no measurements (the file is empty)")
    out = []
    for where, data in rows:
        arch = Arch.from_dict(data, source=where)
        latency = data.get(LATENCY_FIELD)
        if latency is None:
            raise BadInputError(f"{where}: no '{LATENCY_FIELD}' (each line is an Arch plus its measured latency)")
        if not finite_number(latency) or not latency > 0:
            raise BadInputError(f"{where}: '{LATENCY_FIELD}' is {shown(latency)} (must be a finite number > 0 ms)")
        extra = {k: v for k, v in data.items() if k not in ("ks", "e", "d", "r", "image_size", "wid", LATENCY_FIELD)}
        out.append(Measurement(arch, float(latency), extra))
    return out, _width_mult(rows, path)


def write_measurements(path: str | Path, measurements: Sequence[Measurement]) -> None:
    """Write ``M.jsonl`` atomically (one compact JSON object per line)."""
    with atomic_text_file(Path(path)) as f:
        for m in measurements:
            f.write(json.dumps(m.to_dict(), separators=(",", ":")) + "\n")
