"""``socketdevice``: a remote-device backend that times ONNX models on a device over a TCP socket.

The device runs a small timing server (the test suite's stand-in is ``tests/socket_device_server.py``,
which times with ONNX Runtime on the host). One request per model: a JSON header line
``{"runs": R, "rounds": N, "warmup": W, "threads": T}`` followed by the model's size and bytes; the
reply is one JSON line ``{"rounds": [[ms, ...], ...]}`` or ``{"error": "..."}``. No drift reference
is timed (the figures are raw). Only public toolkit modules are imported.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.backend.artifact import Artifact
from ofa_deploy.backend.interface import CliOption, RemoteDeviceBackend
from ofa_deploy.backend.settings import LOCAL, BackendSettings, setting
from ofa_deploy.backend.timing import LatencyStats, Reference
from ofa_deploy.errors import BadInputError, TargetUnavailableError
from ofa_deploy.graph.ir import Graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_roofline_plugin import __version__

SOCKET_ONNX = "socket-onnx"
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class SocketDeviceSettings(BackendSettings):
    """Where the device's timing server listens (today's address: never recorded)."""

    address: str = setting("", "HOST:PORT of the device's timing server", LOCAL)
    timeout_s: float = setting(30.0, "seconds to connect and for each model's reply", LOCAL)

    def validate(self) -> None:
        if self.address:
            host, _, port = self.address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"address: HOST:PORT, got {self.address!r}")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s: must be positive")


class SocketDeviceBackend(RemoteDeviceBackend):
    """A device reached over one TCP connection per model; ONNX models, raw timings."""

    name = "socketdevice"
    description = "a device timing ONNX models behind a TCP socket (example remote backend)"
    artifact_kinds = (SOCKET_ONNX,)
    Settings = SocketDeviceSettings
    settings: SocketDeviceSettings
    batch_size = 16
    cli_options = (CliOption("--socket-address", "address", "HOST:PORT of the device's timing server", metavar="H:P"),)

    def runtime_info(self) -> dict[str, str]:
        return {"runtime": "socket device", "runtime_version": __version__}

    def check(self) -> dict[str, Any]:
        self.open()
        return {**self.runtime_info(), "threads": self.timing.threads, "target": self.description}

    def _endpoint(self) -> tuple[str, int]:
        if not self.settings.address:
            raise BadInputError("backend 'socketdevice' needs --socket-address HOST:PORT")
        host, _, port = self.settings.address.rpartition(":")
        return host, int(port)

    def open(self) -> None:
        """Check that the device answers (one connection, closed at once)."""
        try:
            socket.create_connection(self._endpoint(), timeout=self.settings.timeout_s).close()
        except OSError as exc:
            reason = exc.strerror or exc
            raise TargetUnavailableError(f"no socket device at {self.settings.address} ({reason})") from None

    def close(self) -> None:
        """Nothing stays open between models."""

    def encode(self, graph: Graph) -> bytes:
        return to_onnx_bytes(graph)

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference | None:
        return None  # raw timings: this device times no drift reference

    def _time_one(self, model: bytes) -> list[list[float]]:
        t = self.timing
        header = json.dumps({"runs": t.runs, "rounds": t.rounds, "warmup": t.warmup, "threads": t.threads})
        try:
            with socket.create_connection(self._endpoint(), timeout=self.settings.timeout_s) as conn:
                conn.sendall(header.encode() + b"\n" + len(model).to_bytes(8, "big") + model)
                reply = conn.makefile("rb").readline(1 << 20)
        except OSError as exc:
            raise TargetUnavailableError(f"the socket device at {self.settings.address} failed: {exc}") from None
        try:
            answer = json.loads(reply)
        except ValueError:
            raise TargetUnavailableError(f"the socket device at {self.settings.address} hung up") from None
        if not isinstance(answer, dict) or "error" in answer:
            raise BadInputError(f"the socket device could not run the model: {answer.get('error', answer)}")
        return answer["rounds"]

    def measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        self.open()
        return [LatencyStats.from_rounds(self._time_one(model)) for _, model in models]

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        (Path(directory) / MODEL_FILE).write_bytes(to_onnx_bytes(graph))
        shape_in, shape_out = list(graph.input_shape), list(graph.output_shape)
        return Artifact(SOCKET_ONNX, [MODEL_FILE], "input", shape_in, "NCHW", "output", shape_out)
