"""Every user-facing failure is one of these; the CLI turns it into one line and an exit code.

Exit codes (README, "Exit codes"): 2 bad input, 3 target unavailable, 1 anything else.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class OFADeployError(Exception):
    """Base class: a failure the user can act on. ``exit_code`` is what the CLI returns; ``fix``, where
    one command fixes it, is that command (``doctor`` prints it on a line of its own)."""

    exit_code = 1

    def __init__(self, message: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class BadInputError(OFADeployError):
    """Unreadable or invalid file, value outside the space, unknown name, infeasible constraint."""

    exit_code = 2


class InvalidArchError(BadInputError):
    """An architecture that is not in the OFA space (names the field and the allowed values)."""


class CheckpointMismatchError(BadInputError):
    """A state_dict whose keys or shapes do not fit the supernet."""


class TargetUnavailableError(OFADeployError):
    """No device, no runtime, or the target went away."""

    exit_code = 3


class RuntimeMissingError(TargetUnavailableError):
    """A backend's Python runtime is not installed; the message names the pip extra."""


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error about arbitrary input stays one short line
    (a 5000-digit integer cannot even be printed: its type stands in)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A third-party exception's message as one line: whitespace folded, the first ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
