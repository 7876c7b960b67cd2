"""A real TVM RPC cluster on 127.0.0.1 for tests: TVM's own ``rpc_tracker`` and ``rpc_server``.

Each tool runs as ``python -m tvm.exec.rpc_tracker`` / ``rpc_server`` in its own session (process
group), since they spawn children; stopping one kills its whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    board_python = str(Path(__file__).parent / "board_python")  # no torch on a board (its sitecustomize)
    path = os.pathsep.join(filter(None, [board_python, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TVM_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    out = open(log, "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    """Kill the tool and its children (its process group), and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@dataclass
class RpcCluster:
    """A tracker and the servers registered with it; ``key`` is the device key they use."""

    workdir: Path
    key: str = "ofa-test"
    tracker_port: int = 0
    tracker: subprocess.Popen | None = None
    servers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def tracker_address(self) -> str:
        return f"127.0.0.1:{self.tracker_port}"

    def start_tracker(self) -> None:
        self.tracker_port = free_port()
        self.tracker = _start(
            [
                "tvm.exec.rpc_tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.tracker_port),
                "--port-end",
                str(self.tracker_port + 1),
                "--silent",
            ],
            self.workdir / "tracker.log",
        )
        self._wait(lambda: self._summary() is not None, "the tracker to listen")

    def start_server(self, key: str | None = None) -> subprocess.Popen:
        return self.start_servers(1, key)[0]

    def start_servers(self, count: int, key: str | None = None) -> list[subprocess.Popen]:
        """``count`` servers registered under ``key``, started side by side (each imports TVM for a
        few seconds), returned once the tracker lists all of them."""
        key = key or self.key
        expected = self.registered(key) + count
        started = []
        for _ in range(count):
            port = free_port()
            command = ["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]
            command += ["--tracker", self.tracker_address, "--key", key]
            started.append(_start(command, self.workdir / f"server-{len(self.servers)}.log"))
            self.servers.append(started[-1])
        self._wait(lambda: self.registered(key) >= expected, f"{count} server(s) to register")
        return started

    def start_standalone_server(self) -> int:
        """A server without a tracker (for ``--rpc HOST:PORT``); returns its port once it listens."""
        port = free_port()
        server = _start(
            ["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
            self.workdir / f"server-{len(self.servers)}.log",
        )
        self.servers.append(server)
        self._wait(lambda: _listening(port), "the standalone server to listen")
        return port

    def _summary(self) -> dict | None:
        from ofa_deploy.backends.tvm.rpc import Endpoint, TrackerClient

        try:
            client = TrackerClient(Endpoint("127.0.0.1", self.tracker_port), 2.0)
        except Exception:
            return None
        try:
            return client.summary(2.0)
        except Exception:
            return None
        finally:
            client.close()

    def registered(self, key: str | None = None) -> int:
        from ofa_deploy.backends.tvm.rpc import key_count

        return key_count(self._summary() or {}, key or self.key)

    def free(self, key: str | None = None) -> int:
        info = (self._summary() or {}).get("queue_info", {}).get(key or self.key, {})
        return int(info.get("free", 0))

    def wait_free(self, count: int, timeout_s: float = 60.0) -> None:
        """Until ``count`` servers are free again (a server re-registers after each session)."""
        self._wait(lambda: self.free() >= count, f"{count} free server(s)", timeout_s)

    def _wait(self, ready, what: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.2)
        logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.workdir.glob("*.log")))
        raise TimeoutError(f"waited {timeout_s:.0f} s for {what}; logs:\n{logs}")

    def stop(self) -> None:
        for server in self.servers:
            stop(server)
        if self.tracker is not None:
            stop(self.tracker)


@contextlib.contextmanager
def rpc_cluster(workdir: Path, servers: int = 1, key: str = "ofa-test", tracker: bool = True):
    """A tracker (unless ``tracker`` is False) with ``servers`` servers under ``key``; everything is
    stopped on exit."""
    cluster = RpcCluster(workdir, key)
    try:
        if tracker:
            cluster.start_tracker()
        if servers:
            cluster.start_servers(servers)
        yield cluster
    finally:
        cluster.stop()
