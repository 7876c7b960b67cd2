"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
HOST_BACKENDS = ("onnxruntime", "openvino", "tflite")


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(headers: list[str], rows: list[list]) -> None:
    from ofa_deploy.cli.output import format_table

    print(format_table(headers, rows))
