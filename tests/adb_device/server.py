"""A loopback Android device speaking the real ADB wire protocol over TCP, for tests.

Transport: 24-byte message headers (command, arg0, arg1, length, byte-sum checksum, magic),
CNXN and AUTH (token, signature checked against keys the "user" accepted, public-key
acceptance), OPEN/OKAY/WRTE/CLSE streams with one WRTE in flight per stream. Services:
``shell:`` (the command runs through /bin/sh, device paths rewritten into a temporary root) and
``sync:`` (STAT, SEND/DATA/DONE, RECV, LIST, QUIT). ``drop_after`` closes the connection after
a number of service requests and can keep the device offline, to test reconnection;
``drop_during_upload`` drops it in the middle of pushing a given file, and ``corrupt_uploads``
stores given files with one byte changed (a flash fault the on-device checksum must catch).
Several devices can run at once, each on its own port with its own root.

Run by hand: ``python -m tests.adb_device.server ROOT`` prints the serial to connect to.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from tests.adb_device.auth import parse_public_key, signature_matches
from tests.adb_device.benchmark_service import BenchmarkService
from tests.adb_device.rootfs import FakeRoot

HEADER = struct.Struct("<6I")
VERSION = 0x01000001
MAX_DATA = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
BANNER = b"device::ro.product.name=walleye;ro.product.model=Pixel 2 (loopback);ro.product.device=walleye;\0"
STUB = Path(__file__).with_name("benchmark_model_stub.py")
LIVE_DEVICES: weakref.WeakSet[FakeAdbDevice] = weakref.WeakSet()  # for test reports (tests/conftest.py)
FAILURE_LOG_LIMIT = 20  # failed shell commands kept per device
_FAILURES: collections.deque[tuple[float, str]] = collections.deque(maxlen=50)  # (time, text), every device


def failure_report(since: float | None = None) -> str:
    """What went wrong on the loopback devices: each failed shell command with its whole output (a
    Python traceback of the benchmark stand-in included) and the state of the device's benchmark
    service, for the report of a failed test. ``since`` (a ``time.monotonic()``): only what failed
    from then on, on any device, stopped ones included; None: what every live device kept."""
    if since is not None:
        return "\n\n".join(text for at, text in list(_FAILURES) if at >= since)
    return "\n\n".join(
        f"device {device.serial}:\n" + "\n".join(device.failures) for device in list(LIVE_DEVICES) if device.failures
    )


def _wire(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


def _name(wire: int) -> bytes:
    return struct.pack("<I", wire)


class Dropped(Exception):
    """The test asked for the connection to go away."""


class _Connection:
    """One host connection: the handshake, then services one at a time (as adb-shell uses them)."""

    def __init__(self, device: FakeAdbDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.next_id = 1
        self.upload: tuple[Path, int, bytearray] | None = None  # the file a SEND is writing
        self.pending: list[tuple[bytes, int, int, bytes]] = []

    # -------------------------------------------------------------- messages
    def send(self, command: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        wire = _wire(command)
        header = HEADER.pack(wire, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, wire ^ 0xFFFFFFFF)
        self.sock.sendall(header + data)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("host went away")
            buf += chunk
        return buf

    def receive(self) -> tuple[bytes, int, int, bytes]:
        if self.pending:
            return self.pending.pop(0)
        wire, arg0, arg1, length, checksum, magic = HEADER.unpack(self._exact(HEADER.size))
        if magic != wire ^ 0xFFFFFFFF:
            raise ConnectionError("bad magic")
        data = self._exact(length) if length else b""
        if sum(data) & 0xFFFFFFFF != checksum:
            raise ConnectionError("bad checksum")
        return _name(wire), arg0, arg1, data

    def wait_okay(self, local: int) -> None:
        """Flow control: the host acknowledges every WRTE before the next one."""
        while True:
            message = self.receive()
            if message[0] == b"OKAY" and message[2] == local:
                return
            if message[0] == b"CLSE" and message[2] == local:
                raise ConnectionAbortedError("host closed the stream")
            self.pending.append(message)

    def write(self, local: int, remote: int, data: bytes) -> None:
        for start in range(0, len(data), MAX_DATA):
            self.send(b"WRTE", local, remote, data[start : start + MAX_DATA])
            self.wait_okay(local)

    # -------------------------------------------------------------- session
    def handshake(self) -> None:
        command, _, _, _ = self.receive()
        if command != b"CNXN":
            raise ConnectionError(f"expected CNXN, got {command!r}")
        token = os.urandom(20)
        self.send(b"AUTH", AUTH_TOKEN, 0, token)
        while True:
            command, kind, _, data = self.receive()
            if command != b"AUTH":
                raise ConnectionError(f"expected AUTH, got {command!r}")
            if kind == AUTH_SIGNATURE:
                if any(signature_matches(token, data, key) for key in self.device.accepted_keys.values()):
                    break
                token = os.urandom(20)
                self.send(b"AUTH", AUTH_TOKEN, 0, token)
            elif kind == AUTH_RSAPUBLICKEY:
                if not self.device.accept_new_keys:
                    return self.sock.close()  # the user never tapped "Allow"
                self.device.accepted_keys[data.rstrip(b"\0")] = parse_public_key(data)
                self.device.new_key_prompts += 1
                break
        self.send(b"CNXN", VERSION, MAX_DATA, BANNER)

    def serve(self) -> None:
        self.handshake()
        while True:
            command, remote, local, data = self.receive()
            if command == b"OPEN":
                self.device.count_request()
                local = self.next_id
                self.next_id += 1
                destination = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                self.send(b"OKAY", local, remote)
                if destination.startswith("shell:"):
                    self.shell(local, remote, destination[len("shell:") :])
                elif destination.startswith("sync:"):
                    self.sync(local, remote)
                else:
                    self.send(b"CLSE", local, remote)
            elif command == b"CLSE":
                continue  # the host acknowledging a stream this side closed
            # stray OKAY/WRTE for finished streams are ignored

    # -------------------------------------------------------------- services
    def shell(self, local: int, remote: int, command: str) -> None:
        self.device.commands.append(command)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", self.device.fs.rewrite_command(command)],
            cwd=self.device.fs.root,
            env=self.device.shell_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output = bytearray()
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                output += chunk
                self.write(local, remote, chunk)
            proc.wait()
            self.device.record_failure(command, proc.returncode, bytes(output))
        finally:
            if proc.poll() is None:  # the host went away mid-command: hang up the shell like adbd
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        self.send(b"CLSE", local, remote)

    def sync(self, local: int, remote: int) -> None:
        buffer = b""
        while True:
            command, _, _, data = self.receive()
            if command == b"CLSE":
                self.send(b"CLSE", local, remote)
                return
            if command != b"WRTE":
                continue
            self.send(b"OKAY", local, remote)
            buffer += data
            while len(buffer) >= 8:
                request, length = struct.unpack("<4sI", buffer[:8])
                if request in (b"DONE", b"QUIT"):
                    body, buffer = b"", buffer[8:]
                else:
                    if len(buffer) < 8 + length:
                        break
                    body, buffer = buffer[8 : 8 + length], buffer[8 + length :]
                reply = self.sync_request(request, length, body)
                if reply is None:  # QUIT
                    self.send(b"CLSE", local, remote)
                    return
                if reply:
                    self.write(local, remote, reply)

    def sync_request(self, request: bytes, length: int, body: bytes) -> bytes | None:
        fs = self.device.fs
        if request == b"STAT":
            path = fs.host_path(body.decode("utf-8", "surrogateescape"))
            if not path.exists():
                return struct.pack("<4s3I", b"STAT", 0, 0, 0)
            st = path.stat()
            return struct.pack("<4s3I", b"STAT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        if request == b"SEND":
            spec = body.decode("utf-8", "surrogateescape")
            device_path, _, mode = spec.rpartition(",")
            self.upload = (fs.host_path(device_path), int(mode or "420"), bytearray())
            return b""
        if request == b"DATA":
            self.upload[2].extend(body)
            self.device.check_upload(self.upload[0])
            return b""
        if request == b"DONE":
            path, mode, content = self.upload
            content = self.device.stored_content(path, content)
            try:
                path.write_bytes(bytes(content))
                os.chmod(path, stat.S_IMODE(mode) or 0o644)
                os.utime(path, (length, length))
            except OSError as exc:
                message = f"{exc.strerror}: {exc.filename}".encode()
                return struct.pack("<4sI", b"FAIL", len(message)) + message
            self.device.pushed.append(str(path))
            return struct.pack("<4sI", b"OKAY", 0)
        if request == b"RECV":
            path = fs.host_path(body.decode("utf-8", "surrogateescape"))
            if not path.is_file():
                message = b"No such file or directory"
                return struct.pack("<4sI", b"FAIL", len(message)) + message
            content = path.read_bytes()
            chunks = [content[i : i + 64 * 1024] for i in range(0, len(content), 64 * 1024)]
            return b"".join(struct.pack("<4sI", b"DATA", len(c)) + c for c in chunks) + struct.pack("<4sI", b"DONE", 0)
        if request == b"LIST":
            directory = fs.host_path(body.decode("utf-8", "surrogateescape"))
            out = b""
            for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
                st = entry.stat()
                name = entry.name.encode()
                out += struct.pack("<4s4I", b"DENT", st.st_mode, st.st_size, int(st.st_mtime), len(name)) + name
            return out + struct.pack("<4s4I", b"DONE", 0, 0, 0, 0)
        if request == b"QUIT":
            return None
        message = f"unknown sync request {request!r}".encode()
        return struct.pack("<4sI", b"FAIL", len(message)) + message


class FakeAdbDevice:
    """The device: a listening socket on 127.0.0.1, a fake root, a benchmark service."""

    def __init__(self, root: Path, accept_new_keys: bool = True) -> None:
        self.fs = FakeRoot(root)
        self.accept_new_keys = accept_new_keys
        self.accepted_keys: dict[bytes, tuple[int, int]] = {}
        self.new_key_prompts = 0
        self.commands: list[str] = []
        self.failures: list[str] = []  # shell commands that failed or printed a traceback, with their output
        self.pushed: list[str] = []
        self.requests = 0
        self.connections = 0
        self._drop_at: int | None = None
        self._keep_offline = False
        self.offline = False
        self._drop_uploads: tuple[str, bool] | None = None  # (file name part, stay offline)
        self._corrupt_uploads: str | None = None
        self.stopped = False
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._socket_dir = tempfile.mkdtemp(prefix="ofa-fake-bench-")
        self.benchmark = BenchmarkService(Path(self._socket_dir) / "bench.sock")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fake-adbd")

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeAdbDevice:
        self.benchmark.start()
        self._thread.start()
        LIVE_DEVICES.add(self)
        return self

    def stop(self) -> None:
        """Stop listening and hang up every connection. A socket closed while another thread blocks on
        it stays open in the kernel until that call returns: a closed-only listener still accepted the
        next connection to its port and served it with the stopped benchmark service. Shutting the
        sockets down first wakes those calls, and the accept loop is joined."""
        LIVE_DEVICES.discard(self)
        with self._lock:
            self.stopped = True
            live = list(self._live)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._listener.close()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.benchmark.stop()

    def install_benchmark_stub(self, directory: Path) -> Path:
        """A host file to give as the ``benchmark_model`` binary: pushed to the device and run there."""
        path = directory / "benchmark_model"
        path.write_text(f"#!{sys.executable} -S\n" + STUB.read_text())
        path.chmod(0o755)
        return path

    def shell_env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.fs.bin}:/usr/bin:/bin",
            "HOME": str(self.fs.root / "data" / "local" / "tmp"),
            "OFA_FAKE_BENCH_SOCKET": str(self.benchmark.socket_path),
            "OFA_FAKE_DEVICE": self.serial,
            "LC_ALL": "C",
        }

    def record_failure(self, command: str, status: int, output: bytes) -> None:
        """Keep a shell command that exited non-zero or whose output holds a traceback (a batch script
        exits 0 even when a benchmark_model run in it failed), for :func:`failure_report`."""
        text = output.decode("utf-8", "replace")
        if status == 0 and "Traceback (most recent call last)" not in text and "ERROR:" not in text:
            return
        entry = f"$ {command[:300]}\n[exit {status}]\n{text[-8000:]}"
        state = "STOPPED" if self.stopped else "live"
        _FAILURES.append((time.monotonic(), f"device {self.serial} ({state}; {self.benchmark.state()}):\n{entry}"))
        with self._lock:
            self.failures.append(entry)
            del self.failures[:-FAILURE_LOG_LIMIT]

    # -------------------------------------------------------------- faults
    def drop_after(self, requests: int, offline: bool = True) -> None:
        """Close the connection when the host opens its ``requests``-th next service; with
        ``offline``, refuse every later connection until :meth:`back_online`."""
        with self._lock:
            self._drop_at = self.requests + requests
            self._keep_offline = offline

    def back_online(self) -> None:
        with self._lock:
            self.offline = False
            self._drop_at = None
            self._drop_uploads = None

    def drop_during_upload(self, name_part: str, offline: bool = True) -> None:
        """Close the connection while a file whose path contains ``name_part`` is being pushed
        (after its first data chunk: the file is never completed); with ``offline``, stay away."""
        with self._lock:
            self._drop_uploads = (name_part, offline)

    def corrupt_uploads(self, name_part: str | None) -> None:
        """Store pushed files whose path contains ``name_part`` with their last byte flipped (None: stop)."""
        with self._lock:
            self._corrupt_uploads = name_part

    def check_upload(self, path: Path) -> None:
        with self._lock:
            if self._drop_uploads is not None and self._drop_uploads[0] in str(path):
                self.offline = self._drop_uploads[1]
                self._drop_uploads = None
                raise Dropped()

    def stored_content(self, path: Path, content: bytearray) -> bytearray:
        with self._lock:
            if self._corrupt_uploads is not None and self._corrupt_uploads in str(path) and content:
                content = bytearray(content)
                content[-1] ^= 0xFF
        return content

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1
            if self._drop_at is not None and self.requests >= self._drop_at:
                self._drop_at = None
                self.offline = self._keep_offline
                raise Dropped()

    # -------------------------------------------------------------- serving
    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:  # registered before stop() can look: stop() hangs up every live connection
                if self.stopped:
                    sock.close()
                    return
                if self.offline:
                    sock.close()
                    continue
                self._live.add(sock)
                self.connections += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock,), daemon=True, name="fake-adbd-conn").start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            _Connection(self, sock).serve()
        except (Dropped, OSError, ConnectionError, struct.error):
            pass
        finally:
            with self._lock:
                self._live.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


if __name__ == "__main__":
    device = FakeAdbDevice(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())).start()
    print(f"fake ADB device on {device.serial}, root {device.fs.root}", flush=True)
    threading.Event().wait()
