"""Printing helpers shared by the verbs: ``--json`` documents and plain-text tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ofa_deploy.files import finite_json

log = logging.getLogger("ofa_deploy.cli")


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else there (what `--json` promises), and strict JSON:
    a non-finite number (NaN, Infinity: e.g. a Kendall tau of constant values) is written as
    ``null``, with a debug line naming where it was, never as the ``NaN`` most parsers refuse."""
    json.dump(finite_json(document), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def printable(text: str) -> str:
    """``text`` as one line that cannot drive the terminal: every control character (C0, DEL, C1) and
    every invisible format character (bidirectional overrides...) is written as an escape, e.g. ``\\x1b``.
    For anything a device, a file or a peer may have put into a message."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(c: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
        f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: headers, a rule, then rows; numeric cells right-aligned, every cell made printable."""
    cells = [[printable(str(h)) for h in headers]] + [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def info(message: str) -> None:
    """Progress and notes go to stderr (through logging: ``-q`` silences them) so stdout stays clean
    for ``--json``. A message starting with ``warning:`` is logged as a warning."""
    if message.startswith("warning: "):
        log.warning(message)
    else:
        log.info(message)
