"""What ``ofa-deploy doctor`` reports: one finding per thing a first run needs, each with the fix.

A backend answers :meth:`~ofa_deploy.backend.interface.Backend.diagnose` with a list of
:class:`Finding`: the base classes check the runtime and, for a remote device, that it answers;
a backend adds what only it knows (adb: the host's adb server against the transport, the phone's
authorization, ABI and governor, and a trial run of ``benchmark_model``; tvm: the tracker, a board
session and its runtime; nvidia: driver, CUDA, TensorRT and clocks). A finding never raises: a
failure is a ``fail`` finding with the one line that explains it and the command that fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, TypeVar

from ofa_deploy.errors import OFADeployError

T = TypeVar("T")


class Verdict(str, Enum):
    """How a check came out; only ``fail`` stops a first run."""

    OK = "ok"
    WARN = "warn"  # works, but the figures may suffer (a governor, a busy server)
    FAIL = "fail"  # the first run would stop here
    INFO = "info"  # what the target can and cannot give, nothing to fix


@dataclass(frozen=True)
class Finding:
    """One check: what was checked, how it came out, what was found, and how to fix it."""

    check: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


def attempt(check: str, action: Callable[[], T], fix: str = "") -> tuple[T | None, Finding | None]:
    """Run ``action``; on an OFADeployError the ``fail`` finding that explains it (with the error's own
    fix, else ``fix``), else ``(result, None)``. Anything else is a bug and propagates."""
    try:
        return action(), None
    except OFADeployError as exc:
        return None, Finding(check, Verdict.FAIL, str(exc), exc.fix or fix)


def failed(findings: list[Finding]) -> bool:
    """Whether any finding stops a first run."""
    return any(f.verdict is Verdict.FAIL for f in findings)
