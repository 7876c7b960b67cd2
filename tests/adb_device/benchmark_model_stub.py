# Stand-in for the Android benchmark_model binary (the fixture adds a shebang for this Python).
# It forwards its arguments to the loopback device's benchmark service, which runs the pushed
# .tflite with ai-edge-litert and answers in benchmark_model's output format; a stub keeps
# each run to a Python start-up without imports, instead of loading LiteRT in every process.
import json
import os
import socket
import sys

path = os.environ.get("OFA_FAKE_BENCH_SOCKET")
if not path:
    print("ERROR: benchmark service not reachable (OFA_FAKE_BENCH_SOCKET unset)")
    sys.exit(1)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
    try:
        conn.connect(path)
    except OSError as exc:  # say whose service it was, then crash with the traceback as before
        device = os.environ.get("OFA_FAKE_DEVICE", "?")
        print(f"benchmark service of loopback device {device} at {path}: {exc!r}", file=sys.stderr)
        raise
    conn.sendall(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}).encode() + b"\n")
    reply = b""
    while chunk := conn.recv(65536):
        reply += chunk
answer = json.loads(reply)
sys.stdout.write(answer["output"])
sys.stdout.flush()
sys.exit(answer["rc"])
