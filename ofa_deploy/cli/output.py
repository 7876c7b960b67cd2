"""Printing helpers shared by the verbs: ``--json`` documents and plain-text tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("ofa_deploy.cli")


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else there (what `--json` promises)."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
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
