"""What a cluster host sends back to the driver: plain JSON, checked before the driver uses it.

A job's answer travels as UTF-8 JSON bytes. Ray hands ``bytes`` over raw (no pickling) in both
directions, so an honest host's answer, errors included, never goes through the unpickler on the
driver; and whatever a host claims is checked here for shape and type before it becomes a record,
a table or timings (a host is a member of the cluster, not a trusted party: docs/fleet.md).
Ray itself still unpickles an object that a host puts in its object store some other way (Ray's
trust model: every member can run code on every other one; token authentication keeps
non-members out).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ofa_deploy.backend.timing import LatencyStats
from ofa_deploy.errors import BadInputError, OFADeployError, TargetUnavailableError

MAX_REPLY_BYTES = 256 * 1024 * 1024  # a shard's table is a few MB; anything near this is not an answer
_KINDS: dict[str, type[OFADeployError]] = {
    "unavailable": TargetUnavailableError,
    "bad-input": BadInputError,
    "failed": OFADeployError,
}


def _kind(exc: OFADeployError) -> str:
    if isinstance(exc, TargetUnavailableError):
        return "unavailable"
    return "bad-input" if isinstance(exc, BadInputError) else "failed"


def answer(work: Callable[[], dict[str, Any]], node: Callable[[], str]) -> bytes:
    """Run a job's ``work`` on its host and encode the outcome: ``{"ok": ..., "node": ...}`` or
    ``{"error": kind, "message": ...}`` (an unforeseen exception is a ``failed`` one, in one line)."""
    try:
        payload: dict[str, Any] = {"ok": work(), "node": node()}
        return json.dumps(payload, allow_nan=False).encode()
    except OFADeployError as exc:
        payload = {"error": _kind(exc), "message": str(exc)}
    except Exception as exc:  # the driver gets one line instead of a pickled exception
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        payload = {"error": "failed", "message": f"{type(exc).__name__}: {detail}"}
    return json.dumps(payload).encode()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode(device: str, raw: Any) -> tuple[dict[str, Any], str]:
    """(the job's result, the Ray node id it ran on) from a host's reply; raises the host's own
    error (same kind, its message), or OFADeployError for a reply that is not a valid answer."""
    if not isinstance(raw, bytes):
        raise invalid(device, f"a {type(raw).__name__} instead of JSON bytes")
    if len(raw) > MAX_REPLY_BYTES:
        raise invalid(device, f"{len(raw)} bytes, over the limit of {MAX_REPLY_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise invalid(device, f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise invalid(device, f"a JSON {type(doc).__name__} instead of an object")
    if "error" in doc:
        kind, message = doc.get("error"), doc.get("message")
        if kind not in _KINDS or not isinstance(message, str):
            raise invalid(device, "an error without a known kind and a message")
        raise _KINDS[kind](message)
    result, node = doc.get("ok"), doc.get("node")
    if not isinstance(result, dict) or not isinstance(node, str):
        raise invalid(device, "no 'ok' object and 'node' id")
    return result, node


def invalid(device: str, what: str) -> OFADeployError:
    """The error for a host's reply that is not a valid answer (none of it is used)."""
    return OFADeployError(f"{device}: its host sent an invalid reply ({what}); nothing of it was used")


def field_of(device: str, result: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``result[name]`` when it is a ``kind`` (never a bool for a number); else the invalid-reply error."""
    value = result.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise invalid(device, f"'{name}' is not a {' or '.join(k.__name__ for k in kinds)}")
    return value


_STATS_FIELDS = {f.name for f in fields(LatencyStats)}


def stats_from_plain(device: str, items: Any, expected: int) -> list[LatencyStats]:
    """LatencyStats from a host's list of plain dicts: one per model sent, every field finite."""
    if not isinstance(items, list) or len(items) != expected:
        raise invalid(device, f"timings for {expected} model(s) expected")
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) != _STATS_FIELDS:
            raise invalid(device, "timings without exactly the fields of a measurement")
        for name, value in item.items():
            if value is None and name == "reference_ms":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise invalid(device, f"timing field '{name}' is not a finite number")
        out.append(LatencyStats(**item))
    return out
