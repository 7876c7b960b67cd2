"""The stand-in device for the ``socketdevice`` example backend (tests/plugin_package): a TCP server
that times each ONNX model it is sent with ONNX Runtime on this host and answers with the timings.

    python tests/socket_device_server.py      # prints "listening PORT", serves until killed
"""

from __future__ import annotations

import json
import socketserver
import sys
import time

import numpy as np
import onnxruntime as ort


class TimeModel(socketserver.StreamRequestHandler):
    """One model per connection: header line, 8-byte size, the model; one JSON line back."""

    def handle(self) -> None:
        try:
            header = json.loads(self.rfile.readline(4096))
            model = self.rfile.read(int.from_bytes(self.rfile.read(8), "big"))
            options = ort.SessionOptions()
            options.intra_op_num_threads = int(header["threads"])
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            feed = {
                i.name: np.random.default_rng(0).standard_normal([int(d) for d in i.shape], dtype=np.float32)
                for i in session.get_inputs()
            }
            for _ in range(int(header["warmup"])):
                session.run(None, feed)
            rounds = []
            for _ in range(int(header["rounds"])):
                times = []
                for _ in range(int(header["runs"])):
                    start = time.perf_counter()
                    session.run(None, feed)
                    times.append((time.perf_counter() - start) * 1e3)
                rounds.append(times)
            answer = {"rounds": rounds}
        except Exception as exc:  # the client shows it as one line
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


def main() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), TimeModel) as server:
        print(f"listening {server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
