"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
HOST_BACKENDS = ("onnxruntime", "openvino", "tflite")


def machine() -> str:
    from ofa_deploy.backend.host import describe_host

    return describe_host()


def print_table(headers: list[str], rows: list[list]) -> None:
    from ofa_deploy.cli.output import format_table

    print(format_table(headers, rows))
