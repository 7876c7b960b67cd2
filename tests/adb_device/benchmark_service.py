"""What the fake phone's ``benchmark_model`` really does: run the .tflite with ai-edge-litert and
print the timings the way TFLite's benchmark_model prints them (``count=.. avg=.. std=..`` lines
and the ``Inference timings in us`` summary). Served on a Unix socket to the stub program."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import socketserver
import stat
import threading
import time
import traceback
from pathlib import Path

import numpy as np


def _flags(argv: list[str]) -> dict[str, str]:
    flags = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg[2:].partition("=")
            flags[name] = value
    return flags


def stat_line(times_us: list[int]) -> str:
    """One statistics line as TFLite's Stat::OutputToStream writes it (integer microseconds)."""
    if not times_us:
        return "count=0"
    if min(times_us) == max(times_us):
        return f"count={len(times_us)} curr={times_us[-1]}" + ("(all same)" if len(times_us) > 1 else "")
    avg = sum(times_us) / len(times_us)
    std = int(math.sqrt(max(sum(t * t for t in times_us) / len(times_us) - avg * avg, 0.0)))
    return (
        f"count={len(times_us)} first={times_us[0]} curr={times_us[-1]} min={min(times_us)} "
        f"max={max(times_us)} avg={avg:g} std={std}"
    )


def simulated_us(model: bytes) -> int:
    """A deterministic stand-in latency for a model: grows with its size (weights dominate the file)."""
    return 50 + len(model) // 200


class BenchmarkRunner:
    """Runs models with ai-edge-litert; interpreters are cached by model content and settings."""

    def __init__(self) -> None:
        self._cache: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self.runs: list[dict[str, str]] = []
        self.slowdown = 1.0  # > 1: this phone reports proportionally slower timings (a throttled unit)
        # True: every run of a model reports the same time, derived from the model's size, instead of the
        # time LiteRT took on this host; for tests of logic that compares phones (a busy host makes
        # identical loopback phones disagree at random, which real phones of one model do not)
        self.simulated = False

    def _interpreter(self, data: bytes, threads: int, xnnpack: bool):
        from ai_edge_litert import interpreter as litert

        key = (hashlib.sha1(data).hexdigest(), threads, xnnpack)
        if key not in self._cache:
            resolver = (
                litert.OpResolverType.AUTO if xnnpack else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
            interp = litert.Interpreter(model_content=data, num_threads=threads, experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
            detail = interp.get_input_details()[0]
            x = np.random.default_rng(0).standard_normal(tuple(detail["shape"]), dtype=np.float32)
            interp.set_tensor(detail["index"], x)
            self._cache[key] = interp
        return self._cache[key]

    def run(self, argv: list[str], cwd: str = ".") -> tuple[str, int]:
        """benchmark_model's output and exit status for ``argv``, started in ``cwd``."""
        flags = _flags(argv)
        graph = flags.get("graph", "")
        threads = int(flags.get("num_threads", "1"))
        runs, warmup = int(flags.get("num_runs", "50")), int(flags.get("warmup_runs", "1"))
        xnnpack = flags.get("use_xnnpack", "true") != "false"
        self.runs.append(flags)
        head = [
            "INFO: STARTING!",
            f"INFO: Num threads: [{threads}]",
            f"INFO: Graph: [{graph}]",
            f"INFO: Use xnnpack: [{int(xnnpack)}]",
        ]
        path = Path(cwd) / graph
        if not path.is_file():
            return "\n".join(
                [*head, f"ERROR: Could not open '{graph}'.", f"ERROR: Failed to mmap model {graph}"]
            ) + "\n", 1
        data = path.read_bytes()
        with self._lock:
            start = time.perf_counter_ns()
            try:
                interp = self._interpreter(data, threads, xnnpack)
            except Exception as exc:  # a model LiteRT rejects: benchmark_model reports it the same way
                return "\n".join([*head, f"ERROR: Failed to construct interpreter ({exc})"]) + "\n", 1
            init_us = (time.perf_counter_ns() - start) // 1000
            if self.simulated:
                steady = simulated_us(data)
                warm, timed = [steady] * max(warmup, 1), [steady] * runs
            else:
                warm, timed = self._time(interp, max(warmup, 1)), self._time(interp, runs)
        if self.slowdown != 1.0:
            warm, timed = ([max(1, int(t * self.slowdown)) for t in ts] for ts in (warm, timed))
        lines = [
            *head,
            f"INFO: Loaded model {graph}",
            f"INFO: The input model file size (MB): {len(data) / 1e6:.6f}",
            f"INFO: Initialized session in {init_us / 1000:.3f}ms.",
            f"INFO: Running benchmark for at least {warmup} iterations and at least 0 seconds but terminate if "
            "exceeding 150 seconds.",
            f"INFO: {stat_line(warm)}",
            "",
            f"INFO: Running benchmark for at least {runs} iterations and at least 0 seconds but terminate if "
            "exceeding 150 seconds.",
            f"INFO: {stat_line(timed)}",
            "",
            f"INFO: Inference timings in us: Init: {init_us}, First inference: {warm[0]}, "
            f"Warmup (avg): {sum(warm) / len(warm):g}, Inference (avg): {sum(timed) / len(timed):g}",
        ]
        return "\n".join(lines) + "\n", 0

    @staticmethod
    def _time(interp, n: int) -> list[int]:
        times = []
        for _ in range(n):
            start = time.perf_counter_ns()
            interp.invoke()
            times.append(max(1, (time.perf_counter_ns() - start) // 1000))
        return times


class BenchmarkService:
    """A Unix-socket server answering the stub: one JSON request, one JSON reply per connection."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.runner = BenchmarkRunner()
        runner = self.runner

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    request = json.loads(self.rfile.readline())
                    output, rc = runner.run(request["argv"], request.get("cwd", "."))
                except Exception as exc:  # a bug of this stand-in: answer with it rather than hang up silently
                    output = f"ERROR: the loopback benchmark service failed: {exc!r}\n{traceback.format_exc()}"
                    rc = 1
                self.wfile.write(json.dumps({"output": output, "rc": rc}).encode())

        if socket_path.exists():
            os.unlink(socket_path)
        self._server = socketserver.ThreadingUnixStreamServer(str(socket_path), Handler)
        self._server.daemon_threads = True
        self._inode = os.stat(socket_path).st_ino
        self._stopped = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-benchmark")

    def start(self) -> BenchmarkService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()

    def state(self) -> str:
        """Whether the service still listens on its socket file, for the report of a failed test."""
        if self._stopped:
            return "benchmark service stopped"
        listener = self._server.socket
        try:
            listening = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            own_inode = os.fstat(listener.fileno()).st_ino
        except OSError as exc:
            return f"benchmark service socket unusable: {exc}"
        try:
            info = os.stat(self.socket_path)
            found = "a socket" if stat.S_ISSOCK(info.st_mode) else "NOT a socket"
            found += "" if info.st_ino == self._inode else " (REPLACED)"
        except OSError as exc:
            found = f"missing ({exc.strerror})"
        return f"benchmark service {'listening' if listening else 'NOT LISTENING'} (fd inode {own_inode}), file {found}"
