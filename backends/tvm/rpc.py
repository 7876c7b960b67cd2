"""TVM RPC sessions with deadlines: through a tracker (the device pool), a direct server, or in-process.

TVM gives no deadline of its own: a tracker ``request`` for a key without a free server waits
forever, and ``connect_tracker`` to a dead tracker retries for about a minute. So the tracker
protocol's request is sent here on the toolkit's own socket with a timeout (closing it withdraws
the request), every address is probed before TVM is asked to connect, and every request to a
device runs against ``--rpc-timeout``.

:class:`DeviceSession` is one device as the backend uses it: upload a library, load it into a
Relax VM with an input, time it with ``time_evaluator`` in rounds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ofa_deploy.errors import BadInputError, TargetUnavailableError, short_repr

log = logging.getLogger(__name__)
T = TypeVar("T")
_HOST = re.compile(r"^[0-9A-Za-z.:\-_\[\]%]{1,255}$")  # a host name or an IPv4/IPv6 address
_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:]+)\]|(?P<host>[\w.\-]+)):(?P<port>\d{1,5})$")


class DeviceLostError(TargetUnavailableError):
    """The device stopped answering (connection reset, server killed, request past its deadline)."""


@dataclass(frozen=True)
class Endpoint:
    """A TVM RPC tracker or server address; :meth:`parse` reads ``HOST:PORT`` (an IPv6 host in brackets)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, flag: str) -> Endpoint:
        match = _ADDRESS.match(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise BadInputError(f"{flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
        return cls(match["v6"] or match["host"], int(match["port"]))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def call_with_deadline(action: Callable[[], T], timeout_s: float, what: str) -> T:
    """``action()``, or DeviceLostError when it has not returned within ``timeout_s``.

    TVM's RPC calls block in C++ without a timeout; the call runs in a daemon thread that is
    abandoned (with its session, which the caller then drops) when the deadline passes."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = action()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"tvm-rpc: {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise DeviceLostError(f"the TVM RPC device did not answer within {timeout_s:g} s (--rpc-timeout) while {what}")
    if "error" in box:
        raise box["error"]
    return box["value"]


def probe(endpoint: Endpoint, timeout_s: float, what: str) -> None:
    """Fail fast (one line) when nothing listens at ``endpoint``."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=min(timeout_s, 10.0)):
            pass
    except OSError as exc:
        raise TargetUnavailableError(
            f"no TVM RPC {what} at {endpoint} ({exc.strerror or exc}); start it "
            f"(python -m tvm.exec.rpc_{'tracker' if what == 'tracker' else 'server'} --host {endpoint.host} "
            f"--port {endpoint.port}) or fix the address"
        ) from None


MAX_TRACKER_REPLY = 1 << 20  # bytes: a summary of a few hundred servers is a few kB


class TrackerClient:
    """The tracker's JSON protocol (tvm.rpc.base framing) on a socket, bounded: one deadline for each
    whole request (a tracker trickling bytes cannot stretch it), replies of at most 1 MiB, and every
    reply's shape checked. Whatever the tracker does, the outcome is an answer or one line, exit 3."""

    def __init__(self, endpoint: Endpoint, timeout_s: float) -> None:
        from tvm.rpc import base

        self.base = base
        self.endpoint = endpoint
        probe(endpoint, timeout_s, "tracker")
        deadline = time.monotonic() + timeout_s
        try:
            self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s)
        except OSError as exc:
            raise TargetUnavailableError(f"TVM RPC tracker {endpoint} did not answer ({exc})") from None
        try:
            self.sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            magic = struct.unpack("<i", self._recv(4, deadline))[0]
        except OSError as exc:  # TimeoutError included
            self.close()
            raise TargetUnavailableError(f"TVM RPC tracker {endpoint} did not answer ({exc})") from None
        if magic != base.RPC_TRACKER_MAGIC:
            self.close()
            raise TargetUnavailableError(f"{endpoint} is not a TVM RPC tracker (wrong handshake)")

    def _recv(self, size: int, deadline: float) -> bytes:
        """Exactly ``size`` bytes before ``deadline`` (TimeoutError after it, however the bytes arrive)."""
        chunks, received = [], 0
        while received < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(size - received, 65536))
            if not chunk:
                raise ConnectionError("connection closed by the tracker")
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)

    def _malformed(self, request: str, what: str) -> TargetUnavailableError:
        return TargetUnavailableError(f"TVM RPC tracker {self.endpoint} sent a malformed reply to {request}: {what}")

    def _ask(self, message: list[Any], timeout_s: float, request: str) -> Any:
        """The tracker's answer to ``message``. TimeoutError when the whole exchange is not done within
        ``timeout_s``; TargetUnavailableError for a refusal, a dropped connection or a malformed reply."""
        deadline = time.monotonic() + timeout_s
        payload = json.dumps(message).encode()
        try:
            self.sock.settimeout(timeout_s)
            self.sock.sendall(struct.pack("<i", len(payload)) + payload)
            size = struct.unpack("<i", self._recv(4, deadline))[0]
            if not 0 < size <= MAX_TRACKER_REPLY:
                raise self._malformed(request, f"a length of {size} bytes (the limit is {MAX_TRACKER_REPLY})")
            body = self._recv(size, deadline)
        except TimeoutError:
            raise
        except OSError as exc:
            raise TargetUnavailableError(f"TVM RPC tracker {self.endpoint} dropped the connection ({exc})") from None
        try:
            value = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self._malformed(request, "not JSON") from None
        if not (isinstance(value, list) and value and type(value[0]) is int):
            raise self._malformed(request, f"expected [code, answer], got {short_repr(value)}")
        if value[0] != self.base.TrackerCode.SUCCESS:
            raise TargetUnavailableError(f"TVM RPC tracker {self.endpoint} refused {request}: {short_repr(value)}")
        if len(value) != 2:
            raise self._malformed(request, f"expected [code, answer], got {short_repr(value)}")
        return value[1]

    def summary(self, timeout_s: float) -> dict[str, Any]:
        """The tracker's summary; ``server_info`` is a list of objects."""
        try:
            value = self._ask([self.base.TrackerCode.SUMMARY], timeout_s, "SUMMARY")
        except TimeoutError:
            raise TargetUnavailableError(
                f"TVM RPC tracker {self.endpoint} did not send its summary within {timeout_s:g} s (--rpc-timeout)"
            ) from None
        servers = value.get("server_info", []) if isinstance(value, dict) else None
        if not (isinstance(servers, list) and all(isinstance(s, dict) for s in servers)):
            raise self._malformed("SUMMARY", f"expected {{'server_info': [...]}}, got {short_repr(value)}")
        return value

    def request(self, key: str, timeout_s: float) -> tuple[str, int, str]:
        """Address of a free server for ``key``; TargetUnavailableError after ``timeout_s``."""
        try:
            value = self._ask([self.base.TrackerCode.REQUEST, key, "", 1], timeout_s, "REQUEST")
        except TimeoutError:
            raise TargetUnavailableError(
                f"no free TVM RPC server for key '{key}' at tracker {self.endpoint} within {timeout_s:g} s "
                f"(--rpc-timeout); list the servers with: python -m tvm.exec.query_rpc_tracker "
                f"--host {self.endpoint.host} --port {self.endpoint.port}"
            ) from None
        if not (isinstance(value, list) and len(value) == 3):
            raise self._malformed("REQUEST", f"expected [host, port, key], got {short_repr(value)}")
        host, port, match_key = value
        if not (isinstance(host, str) and _HOST.match(host) and isinstance(match_key, str) and len(match_key) < 1024):
            raise self._malformed("REQUEST", f"expected [host, port, key], got {short_repr(value)}")
        if not (type(port) is int and 0 < port < 65536):
            raise self._malformed("REQUEST", f"port {short_repr(port)} is not a TCP port")
        return host, port, match_key

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def key_count(summary: dict[str, Any], key: str) -> int:
    """Servers registered under ``key`` in a tracker summary."""
    return sum(1 for s in summary.get("server_info", []) if str(s.get("key", "")).split(":", 1)[-1] == key)


def registered_servers(tracker: Endpoint, key: str, timeout_s: float) -> int:
    """Servers registered under ``key`` at ``tracker`` now (its summary, asked within ``timeout_s``)."""
    client = TrackerClient(tracker, timeout_s)
    try:
        return key_count(client.summary(timeout_s), key)
    finally:
        client.close()


@dataclass(frozen=True)
class Connection:
    """How to reach devices: a tracker and key, a direct server, or in-process (all None)."""

    tracker: Endpoint | None = None
    key: str | None = None
    server: Endpoint | None = None
    timeout_s: float = 60.0

    @property
    def remote(self) -> bool:
        return self.tracker is not None or self.server is not None

    def describe(self) -> str:
        if self.tracker is not None:
            return f"tracker {self.tracker}, key '{self.key}'"
        return f"server {self.server}" if self.server is not None else "in-process"

    def open_rpc(self) -> Any:
        """A new RPC session (one device), within the deadline."""
        from tvm import rpc

        if self.tracker is not None:
            tracker = TrackerClient(self.tracker, self.timeout_s)
            try:
                started = time.monotonic()
                host, port, match_key = tracker.request(str(self.key), self.timeout_s)
                left = max(1.0, self.timeout_s - (time.monotonic() - started))
                return call_with_deadline(
                    lambda: rpc.connect(host, port, match_key, session_timeout=0),
                    left,
                    f"connecting to the server at {host}:{port}",
                )
            except RuntimeError as exc:  # the tracker handed out a server that is gone
                raise DeviceLostError(
                    f"cannot connect to the server the tracker gave ({' '.join(str(exc).split())[:200]})"
                ) from None
            finally:
                tracker.close()
        if self.server is not None:
            probe(self.server, self.timeout_s, "server")
            server = self.server
            try:
                return call_with_deadline(
                    lambda: rpc.connect(server.host, server.port, session_timeout=0),
                    self.timeout_s,
                    f"connecting to {server}",
                )
            except RuntimeError as exc:
                raise TargetUnavailableError(
                    f"TVM RPC server {server} refused the session ({str(exc)[:200]})"
                ) from None
        return rpc.LocalSession()


@dataclass
class Loaded:
    """A library loaded into a Relax VM on the device, with its input set."""

    name: str
    vm: Any


class DeviceSession:
    """One device: upload, load, time; every request under the connection's deadline."""

    def __init__(self, connection: Connection, device_type: str, threads: int, index: int = 0) -> None:
        self.connection = connection
        self.index = index
        self.rpc = connection.open_rpc()
        self.device = self.rpc.cuda(0) if device_type == "cuda" else self.rpc.cpu(0)
        self.uploads = 0
        self._call(lambda: self._set_threads(threads), "setting the thread count")

    def _set_threads(self, threads: int) -> None:
        with contextlib.suppress(Exception):  # an old runtime without the function keeps its default
            self.rpc.get_function("runtime.config_threadpool")(0, threads)

    def _call(self, action: Callable[[], T], what: str) -> T:
        timeout = self.connection.timeout_s if self.connection.remote else 3600.0
        try:
            return call_with_deadline(action, timeout, what)
        except DeviceLostError:
            raise
        except Exception as exc:  # TVM raises RuntimeError/TVMError for a dropped or failed session
            text = " ".join(str(exc).split())
            raise DeviceLostError(
                f"the TVM RPC device ({self.connection.describe()}) failed while {what}: {text[:240]}"
            ) from None

    def load(self, name: str, library: bytes, input_shape: tuple[int, ...]) -> Loaded:
        import tvm
        from tvm import relax

        self.uploads += 1
        remote_name = f"ofa-{self.uploads}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:60]}.so"

        def run() -> Loaded:
            self.rpc.upload(bytearray(library), remote_name)
            module = self.rpc.load_module(remote_name)
            vm = relax.VirtualMachine(module, self.device)
            x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
            vm.set_input("main", tvm.runtime.tensor(x, self.device))
            return Loaded(remote_name, vm)

        return self._call(run, f"loading {name}")

    def run_times(self, loaded: Loaded, number: int, repeat: int, min_repeat_ms: int) -> list[float]:
        """``repeat`` timings (ms) of ``number`` runs each, timed on the device."""

        def run() -> list[float]:
            timer = loaded.vm.time_evaluator(
                "invoke_stateful", self.device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
            )
            return [t * 1e3 for t in timer("main").results]

        return self._call(run, f"timing {loaded.name}")

    def outputs(self, loaded: Loaded, x: np.ndarray) -> np.ndarray:
        import tvm

        def run() -> np.ndarray:
            out = loaded.vm["main"](tvm.runtime.tensor(x, self.device))
            return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

        return self._call(run, f"running {loaded.name}")

    def unload(self, loaded: Loaded) -> None:
        with contextlib.suppress(Exception):  # best effort: the server's work directory goes with the session
            self._call(lambda: self.rpc.remove(loaded.name), f"removing {loaded.name}")

    def close(self) -> None:
        """Drop the session (the server deletes its work directory when the session ends)."""
        self.rpc = None
        self.device = None
