"""One ADB connection to a phone through adb-shell: the RSA key, USB or TCP transport, and
reconnection with back-off when the cable is pulled or Wi-Fi drops mid-run.

Every device operation goes through :meth:`AdbConnection.call`, which reruns it on a fresh
connection a few times; the operations passed to it are idempotent (push, run a script whose
output is only read once complete), so a rerun cannot double-count anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ofa_deploy.backend.interface import require_module
from ofa_deploy.errors import BadInputError, TargetUnavailableError

BACKEND, EXTRA = "adb", "adb"
T = TypeVar("T")
_TCP_SERIAL = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:]+)\]|(?P<host>[\w.\-]+)):(?P<port>\d{1,5})$")


def config_dir() -> Path:
    """Where the toolkit keeps per-user state (``$XDG_CONFIG_HOME/ofa-deploy``, else ``~/.config/ofa-deploy``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ofa-deploy"


def ensure_adb_key(path: Path | None = None) -> Path:
    """Create the RSA key pair once (private key mode 0600) and reuse it, so a phone that was told
    to "always allow" this computer is not asked again on every run."""
    path = path or config_dir() / "adbkey"
    public = Path(f"{path}.pub")
    if path.is_file() and public.is_file():
        return path
    keygen = require_module(BACKEND, EXTRA, "adb_shell.auth.keygen", "adb-shell")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Devices are reached in parallel (threads, and processes of a fleet): one creates the pair while the
    # others wait, so nobody reads a half-written key.
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path.is_file() and public.is_file()):
            old_umask = os.umask(0o077)
            try:
                keygen.keygen(str(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
    return path


def parse_serial(serial: str) -> tuple[str, int] | None:
    """``host:port`` (ADB over TCP / Wi-Fi) -> (host, port); a USB serial -> None."""
    match = _TCP_SERIAL.match(serial)
    if not match:
        return None
    port = int(match["port"])
    if not 0 < port < 65536:
        raise BadInputError(f"adb serial '{serial}': port {port} is outside 1..65535")
    return match["v6"] or match["host"], port


def list_adb_devices(host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 0.5) -> list[dict[str, str]]:
    """Devices the local ``adb`` server knows (``adb devices``); empty when no server is running.

    Only lists: measuring talks to the phone directly through adb-shell, which for USB needs the
    adb server stopped (both cannot claim the USB interface)."""
    port = port or int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
    request = b"host:devices"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall(b"%04x%s" % (len(request), request))
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
    except OSError:
        return []
    if not reply.startswith(b"OKAY") or len(reply) < 8:
        return []
    try:
        length = int(reply[4:8], 16)
    except ValueError:
        return []
    devices = []
    for line in reply[8 : 8 + length].decode("utf-8", "replace").splitlines():
        serial, _, state = line.partition("\t")
        if serial.strip():
            devices.append({"serial": serial.strip(), "state": state.strip() or "unknown"})
    return devices


@functools.cache
def _tcp_transport_class() -> type:
    """adb-shell's TCP transport with three fixes that matter mid-profile: a closed socket is a
    dropped connection at once (adb-shell would spin until its read timeout), a write sends
    everything (a non-blocking send may take only part of a large push), and no Nagle delay."""
    base = require_module(BACKEND, EXTRA, "adb_shell.transport.tcp_transport", "adb-shell").TcpTransport
    timeout_error = require_module(BACKEND, EXTRA, "adb_shell.exceptions", "adb-shell").TcpTimeoutException

    class EofAwareTcpTransport(base):
        def connect(self, transport_timeout_s: float | None) -> None:
            super().connect(transport_timeout_s)
            # small ADB messages (OKAY after every WRTE) must not wait for Nagle's algorithm, as in adb itself
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            if self._connection is None:
                raise ConnectionResetError("the ADB connection is closed")
            data = super().bulk_read(numbytes, transport_timeout_s)
            if numbytes and not data:
                raise ConnectionResetError("the device closed the ADB connection")
            return data

        def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
            if self._connection is None:
                raise ConnectionResetError("the ADB connection is closed")
            view, sent = memoryview(data), 0
            while sent < len(view):
                _, writable, _ = select.select([], [self._connection], [], transport_timeout_s)
                if not writable:
                    raise timeout_error(f"writing to {self._host}:{self._port} timed out")
                sent += self._connection.send(view[sent:])
            return sent

        def abort(self) -> None:
            """Cut the socket under a reader that holds adb-shell's transport lock (it fails at once)."""
            if self._connection is not None:
                with contextlib.suppress(OSError):
                    self._connection.shutdown(socket.SHUT_RDWR)

    return EofAwareTcpTransport


@dataclass
class ConnectionSettings:
    """How :class:`AdbConnection` reaches the phone: which device, the ADB key, timeouts in seconds, retries."""

    serial: str | None  # host:port, a USB serial, or None for the only USB device
    key_path: Path
    transport_timeout_s: float = 10.0  # connecting, and each short request
    command_timeout_s: float = 600.0  # the longest silence allowed while a batch runs on the phone
    auth_timeout_s: float = 30.0  # time to accept the "Allow USB debugging?" prompt
    retries: int = 3
    retry_delay_s: float = 1.0  # doubles after every failed try


class DeviceSession:
    """The connected device as the operations see it: shell, push and stat with the configured timeouts."""

    def __init__(self, device: Any, settings: ConnectionSettings) -> None:
        self.device = device
        self.settings = settings

    def shell(self, command: str, long: bool = False) -> str:
        """Output of ``command`` (stdout and stderr); ``long`` allows the batch timeout between outputs."""
        timeout = self.settings.command_timeout_s if long else self.settings.transport_timeout_s
        return self.device.shell(command, transport_timeout_s=timeout, read_timeout_s=timeout, decode=True)

    def push(self, data: bytes, device_path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``device_path`` through the sync protocol (SEND/DATA/DONE)."""
        timeout = self.settings.transport_timeout_s
        self.device.push(
            io.BytesIO(data), device_path, st_mode=0o100000 | mode, transport_timeout_s=timeout, read_timeout_s=timeout
        )

    def stat(self, device_path: str) -> tuple[int, int, int]:
        """(mode, size, mtime) of ``device_path``; all zero when it does not exist."""
        return self.device.stat(device_path, transport_timeout_s=self.settings.transport_timeout_s)


class AdbConnection:
    """A lazily opened adb-shell device that reconnects when an operation hits a transport fault."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._device: Any = None
        self._transport: Any = None  # the TCP transport, to cut it under a command in flight (close)
        self.connected_once = False
        self.reconnects = 0  # connections opened again after a fault
        self._in_flight = threading.RLock()  # held while an action runs on the device

    @property
    def target(self) -> str:
        return self.settings.serial or "the USB device"

    def _faults(self) -> tuple[type[BaseException], ...]:
        exc = require_module(BACKEND, EXTRA, "adb_shell.exceptions", "adb-shell")
        return (
            OSError,
            exc.AdbConnectionError,
            exc.AdbTimeoutError,
            exc.InvalidChecksumError,
            exc.InvalidCommandError,
            exc.InvalidResponseError,
            exc.TcpTimeoutException,
            exc.UsbDeviceNotFoundError,
            exc.UsbReadFailedError,
            exc.UsbWriteFailedError,
        )

    def _open(self) -> Any:
        adb_device = require_module(BACKEND, EXTRA, "adb_shell.adb_device", "adb-shell")
        signer_module = require_module(BACKEND, EXTRA, "adb_shell.auth.sign_cryptography", "adb-shell")
        signer = signer_module.CryptographySigner(str(ensure_adb_key(self.settings.key_path)))
        address = parse_serial(self.settings.serial) if self.settings.serial else None
        if address is not None:
            self._transport = _tcp_transport_class()(*address)
            device = adb_device.AdbDevice(self._transport, self.settings.transport_timeout_s)
        else:
            require_module(BACKEND, EXTRA, "usb1", "libusb1")
            exc_module = require_module(BACKEND, EXTRA, "adb_shell.exceptions", "adb-shell")
            try:
                device = adb_device.AdbDeviceUsb(
                    serial=self.settings.serial, default_transport_timeout_s=self.settings.transport_timeout_s
                )
            except (exc_module.InvalidTransportError, exc_module.UsbDeviceNotFoundError, OSError) as exc:
                raise TargetUnavailableError(
                    f"no phone to use: no --serial HOST:PORT was given and USB is unavailable ({str(exc)[:120]}); "
                    "give --serial (Wi-Fi ADB) or connect a phone by USB (needs the system libusb-1.0)"
                ) from None
        device.connect(
            rsa_keys=[signer],
            transport_timeout_s=self.settings.transport_timeout_s,
            auth_timeout_s=self.settings.auth_timeout_s,
            read_timeout_s=self.settings.transport_timeout_s,
        )
        return device

    def call(self, action: Callable[[DeviceSession], T], what: str) -> T:
        """Run ``action(session)``; on a dropped connection reconnect with back-off and run it again."""
        exc_module = require_module(BACKEND, EXTRA, "adb_shell.exceptions", "adb-shell")
        faults, last = self._faults(), None
        for attempt in range(self.settings.retries + 1):
            try:
                if self._device is None:
                    self._device = self._open()
                    self.reconnects += self.connected_once
                    self.connected_once = True
                with self._in_flight:
                    return action(DeviceSession(self._device, self.settings))
            except exc_module.DeviceAuthError:
                self.close()
                raise TargetUnavailableError(
                    f"adb device {self.target} refused this computer's key {self.settings.key_path}.pub; unlock the "
                    "phone and accept the 'Allow USB debugging?' prompt, then run the command again"
                ) from None
            except faults as exc:
                self.close()
                last = exc
                if attempt < self.settings.retries:
                    time.sleep(self.settings.retry_delay_s * 2**attempt)
        reason = f"{type(last).__name__}: {last}".strip().rstrip(":")
        if not self.connected_once:
            raise TargetUnavailableError(
                f"cannot connect to adb device {self.target} ({reason[:160]}); check the USB cable or `adb connect`, "
                "that USB debugging is on and this computer's key is allowed on the phone, and that no `adb` server "
                "holds the USB device (`adb kill-server`)"
            )
        raise TargetUnavailableError(
            f"adb device {self.target} stopped answering while {what} after {self.settings.retries + 1} tries "
            f"({reason[:160]}); reconnect it (USB cable, or `adb connect` for Wi-Fi), unlock it and run the command "
            "again"
        )

    def shell(self, command: str, what: str, long: bool = False) -> str:
        return self.call(lambda session: session.shell(command, long), what)

    def if_connected(self, action: Callable[[DeviceSession], Any]) -> None:
        """Run ``action`` once if a connection is open and idle. Clean-up at exit must wait neither for a
        lost phone nor for a command another thread still has in flight (Ctrl-C during a benchmark: the
        process must end now; the device lock it leaves is taken over by the next run)."""
        if self._device is None or not self._in_flight.acquire(blocking=False):
            return
        try:
            with contextlib.suppress(Exception):  # best effort: the phone may be gone already
                action(DeviceSession(self._device, self.settings))
        finally:
            self._in_flight.release()

    def close(self) -> None:
        """Hang up. With a command in flight in another thread, adb-shell's close would wait for it: the
        socket is cut instead (that command fails at once), so closing never waits for the phone."""
        if self._device is None:
            return
        if self._in_flight.acquire(blocking=False):
            try:
                with contextlib.suppress(Exception):  # a dead connection may fail to close; it is closed either way
                    self._device.close()
            finally:
                self._in_flight.release()
        elif self._transport is not None:
            self._transport.abort()
        self._device = None
