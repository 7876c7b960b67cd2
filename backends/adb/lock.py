"""One ofa-deploy run at a time on a phone: a lock directory on the device, beside the device directory.

Runs on one phone share its device directory (the benchmark_model binary, the models, the batch
script) and its CPU: a second run would time its models against the first one's, and its clean-up
would delete the first one's files under it. So before a run touches the device directory it
creates ``DEVICE_DIR.lock`` (``mkdir`` is atomic on every file system) and writes its owner line
into it: a random token, this host, the process id and the start time. A second run (``profile``,
``validate``, ``benchmark``, ``deploy``, ``compile``: every verb that reaches the phone) waits for the
lock up to ``busy_timeout_s`` and then gives up with one line naming the owner (exit 2).

Clean-up removes the run's files and the lock in one device command, and only while the lock
still names this run, so a run that lost its lock removes nothing of another's. A lock left behind
by a run that died on this host (its process is gone, or, in this process, its backend was closed)
is taken over; one left by another host is removed by hand (the message says how).
"""

from __future__ import annotations

import gc
import logging
import os
import posixpath
import re
import secrets
import shlex
import socket
import time
from dataclasses import dataclass, field

from ofa_deploy.backends.adb.connection import DeviceSession
from ofa_deploy.errors import BadInputError, TargetUnavailableError

log = logging.getLogger(__name__)
MARK = "@@ofa-deploy-lock"
POLL_S = 0.5
_HELD: set[str] = set()  # tokens of the locks this process's open backends hold
# the owner line a run writes into the lock: token, host, pid, start time (read back from the device: checked)
_OWNER = re.compile(
    r"(?P<token>[0-9a-f]{16}) (?P<host>[A-Za-z0-9._-]{1,255}) (?P<pid>[0-9]{1,10}) (?P<since>[0-9]{1,12})"
)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:255] or "unknown-host"


@dataclass
class DeviceLock:
    """The lock of one device directory, for one run (one backend)."""

    path: str  # device path of the lock directory
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    host: str = field(default_factory=_host)
    pid: int = field(default_factory=os.getpid)
    since: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def beside(cls, device_dir: str) -> DeviceLock:
        return cls(device_dir.rstrip("/") + ".lock")

    @property
    def owner(self) -> str:
        return f"{self.token} {self.host} {self.pid} {self.since}"

    def _owner_is(self, owner: str) -> str:
        """A shell test: the lock on the device names ``owner``."""
        return f'[ "$(cat {shlex.quote(self.path + "/owner")} 2>/dev/null)" = {shlex.quote(owner)} ]'

    def guarded(self, command: str) -> str:
        """``command`` (``;``-terminated, may be empty), then removing the lock, on the device, only
        while the lock is still this run's."""
        return f"if {self._owner_is(self.owner)}; then {command} rm -rf {shlex.quote(self.path)}; fi; true"

    def acquire(self, session: DeviceSession, timeout_s: float, serial: str | None) -> None:
        """Take the lock, waiting up to ``timeout_s`` for another run to finish (BadInputError then)."""
        target = serial or "the USB device"
        deadline = time.monotonic() + timeout_s
        tried: set[str] = set()  # stale owners already taken over (once each)
        waiting = False
        while True:
            state, holder = self._try(session)
            if state == "acquired" or holder == self.owner:  # the latter: a retry after a dropped reply
                _HELD.add(self.token)
                return
            if state != "held":
                raise TargetUnavailableError(f"cannot create the lock {self.path} on adb device {target}: {holder!r}")
            if holder and holder not in tried and self._stale(holder):
                tried.add(holder)
                session.shell(f"if {self._owner_is(holder)}; then rm -rf {shlex.quote(self.path)}; fi; true")
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise BadInputError(self._busy(holder, serial, timeout_s))
            if not waiting:
                waiting = True
                log.info("adb device %s is in use by %s; waiting up to %g s", target, self._who(holder), timeout_s)
            time.sleep(min(POLL_S, left))

    def _try(self, session: DeviceSession) -> tuple[str, str]:
        """One attempt on the device: ("acquired", ""), ("held", owner line) or ("failed", output)."""
        lock = shlex.quote(self.path)
        command = (
            f"mkdir -p {shlex.quote(posixpath.dirname(self.path) or '/')} 2>/dev/null; "
            f"if mkdir {lock} 2>/dev/null; then echo {shlex.quote(self.owner)} > {lock}/owner && echo {MARK} acquired; "
            f'elif [ -d {lock} ]; then echo "{MARK} held $(cat {lock}/owner 2>/dev/null)"; '
            f"else echo {MARK} failed; fi"
        )
        out = session.shell(command)
        for line in out.splitlines():
            if line.startswith(MARK + " "):
                state, _, rest = line[len(MARK) + 1 :].partition(" ")
                return state.strip(), rest.strip()
        return "failed", out.strip()[:160] or "no answer"

    def _stale(self, holder: str) -> bool:
        """The owner is a run on this host that is gone."""
        owner = _OWNER.fullmatch(holder)
        if owner is None or owner["host"] != self.host:
            return False
        pid = int(owner["pid"])
        if pid == os.getpid():
            if owner["token"] in _HELD:
                gc.collect()  # a backend nobody holds any more is closed (and unlocks) when collected
            return owner["token"] not in _HELD
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, another user's
            return False
        return False

    @staticmethod
    def _who(holder: str) -> str:
        """The owner in words (only fields of the expected shape: the line comes from the device)."""
        owner = _OWNER.fullmatch(holder)
        if owner is None:
            return "another ofa-deploy run"
        age = max(0, int(time.time()) - int(owner["since"]))
        return f"another ofa-deploy run (host {owner['host']}, pid {owner['pid']}, for {age} s)"

    def _busy(self, holder: str, serial: str | None, timeout_s: float) -> str:
        adb = f"adb -s {serial}" if serial else "adb"
        return (
            f"adb device {serial or 'the USB device'} is in use by {self._who(holder)}; waited {timeout_s:g} s "
            f"(setting busy_timeout_s): run again when it is done; if that run is gone, remove its lock: "
            f"{adb} shell rm -r {self.path}"
        )


def forget(lock: DeviceLock) -> None:
    """This process no longer holds ``lock`` (its backend was closed)."""
    _HELD.discard(lock.token)
