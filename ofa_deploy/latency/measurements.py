"""End-to-end latency measurements (``M.jsonl``) and arch lists (``A.jsonl``): JSON Lines files.

Each line of a measurements file is an Arch object (any layout ``Arch.from_dict`` accepts) plus
``"latency_ms"``, a finite number > 0; extra keys (``raw_latency_ms``, ``std_ms``, ``backend``,
``width_mult`` ...) are kept but not required. An arch list is the same without ``latency_ms``.
Blank lines are skipped. A bad line is one :class:`BadInputError` naming the file and the line
number (exit 2); nothing is read past it. Files are read one line at a time, and only regular files
within the size limits of :mod:`ofa_deploy.inputs`; lines are written as strict JSON (no NaN).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.fingerprint import TargetFingerprint, check_same_target
from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_text_file, strict_json
from ofa_deploy.inputs import input_lines
from ofa_deploy.latency.metadata import finite_number, shown
from ofa_deploy.space.arch import N_BLOCKS, Arch, ArchBatch, check_width_mult

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
    """``(where, object)`` for every non-blank line, read one line at a time; ``where`` is ``path:line``."""
    for number, line in input_lines(path, "JSON Lines file"):
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


class _Width:
    """The ``width_mult`` the lines declare (one value for the whole file), None if none does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: tuple[str, float] | None = None

    @property
    def value(self) -> float | None:
        return None if self.found is None else self.found[1]

    def see(self, where: str, data: dict[str, Any]) -> None:
        if data.get("width_mult") is None:
            return
        w = check_width_mult(data["width_mult"], f"{where}: width_mult")
        if self.found is not None and w != self.found[1]:
            raise BadInputError(
                f"{self.path}: {self.found[0]} says width_mult {self.found[1]} but {where} says {w}; keep one width"
            )
        self.found = (where, w)


def read_archs(path: str | Path) -> tuple[ArchBatch, float | None]:
    """The archs of a JSON Lines file, in order, and the width multiplier the lines declare (if any).

    Streamed: each line is checked as an Arch, then kept as 46 bytes (one per choice), so memory is a
    small fraction of the file's size whatever the number of lines."""
    path = Path(path)
    width, choices, resolutions = _Width(path), array("b"), array("H")
    for where, data in _lines(path):
        arch = Arch.from_dict(data, source=where)
        choices.extend(arch.ks + arch.e + arch.d)
        resolutions.append(arch.r)
        width.see(where, data)
    if not resolutions:
        raise BadInputError(f"{path}: no archs (the file is empty)")
    table = np.frombuffer(choices, dtype=np.int8).reshape(len(resolutions), -1)
    batch = ArchBatch(  # each column widened once, straight from the bytes
        ks=table[:, :N_BLOCKS].astype(np.int64),
        e=table[:, N_BLOCKS : 2 * N_BLOCKS].astype(np.int64),
        d=table[:, 2 * N_BLOCKS :].astype(np.int64),
        r=np.frombuffer(resolutions, dtype=np.uint16).astype(np.int64),
    )
    return batch, width.value


def read_measurements(path: str | Path) -> tuple[list[Measurement], float | None]:
    """The measurements of ``M.jsonl`` in order, and the width multiplier the lines declare (if any)."""
    path = Path(path)
    width, out = _Width(path), []
    for where, data in _lines(path):
        arch = Arch.from_dict(data, source=where)
        latency = data.get(LATENCY_FIELD)
        if latency is None:
            raise BadInputError(f"{where}: no '{LATENCY_FIELD}' (each line is an Arch plus its measured latency)")
        if not finite_number(latency) or not latency > 0:
            raise BadInputError(f"{where}: '{LATENCY_FIELD}' is {shown(latency)} (must be a finite number > 0 ms)")
        width.see(where, data)
        extra = {k: v for k, v in data.items() if k not in ("ks", "e", "d", "r", "image_size", "wid", LATENCY_FIELD)}
        out.append(Measurement(arch, float(latency), extra))
    if not out:
        raise BadInputError(f"{path}: no measurements (the file is empty)")
    return out, width.value


def measured_target(
    measurements: Sequence[Measurement], source: str, allow_target_mismatch: bool = False
) -> tuple[TargetFingerprint | None, list[str]]:
    """The target the measurements were made on (the ``target`` record ``validate --save-measurements``
    writes on each line), or None when no line says. Lines from targets that differ in a way that
    changes latency are refused (exit 2, both named) unless ``allow_target_mismatch``; the
    differences allowed are returned for the record."""
    seen: dict[str, tuple[int, TargetFingerprint]] = {}
    for line, m in enumerate(measurements, 1):
        if "target" in m.extra:
            fingerprint = TargetFingerprint.from_dict(m.extra["target"], f"{source}: line {line}")
            seen.setdefault(json.dumps(fingerprint.to_dict(), sort_keys=True), (line, fingerprint))
    if not seen:
        return None, []
    (first_line, first), *others = seen.values()
    mismatch: list[str] = []
    for line, other in others:
        what = f"line {line} of {source}"
        mismatch += check_same_target(what, other, f"line {first_line}'s target", first, allow_target_mismatch)
    return first, mismatch


def write_measurements(path: str | Path, measurements: Sequence[Measurement]) -> None:
    """Write ``M.jsonl`` atomically (one compact JSON object per line)."""
    with atomic_text_file(Path(path)) as f:
        for m in measurements:
            f.write(strict_json(m.to_dict(), separators=(",", ":")) + "\n")
