"""What a backend compiles a sub-network into, declared by kind (never guessed from a file suffix)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ofa_deploy.errors import BadInputError

ONNX = "onnx"
OPENVINO_IR = "openvino-ir"
TFLITE = "tflite"
COST_REPORT = "cost-report"

# ELF e_machine values of the CPUs targets run, and the Android ABI each one is
EM_386, EM_ARM, EM_X86_64, EM_AARCH64, EM_CUDA = 3, 40, 62, 183, 190
ANDROID_ABI_MACHINES = {"arm64-v8a": EM_AARCH64, "armeabi-v7a": EM_ARM, "x86_64": EM_X86_64, "x86": EM_386}


def elf_machine(data: bytes) -> int:
    """``e_machine`` of an ELF file (little-endian) from its first 20 bytes or more, or -1 when it is not one."""
    if data[:4] != b"\x7fELF" or len(data) < 20:
        return -1
    return int.from_bytes(data[18:20], "little")


@dataclass
class Artifact:
    """A compiled model in a bundle directory: its kind, its files, and how to feed and read it."""

    kind: str  # one of the compiling backend's ``artifact_kinds``, e.g. "onnx", "tflite", "tvm-library"
    files: list[str]  # file names inside the bundle directory, the main file first
    input_name: str
    input_shape: list[int]
    layout: str  # "NCHW" or "NHWC"
    output_name: str
    output_shape: list[int]
    details: dict[str, Any] = field(default_factory=dict)  # backend-specific facts (target triple, engine version)

    @classmethod
    def of_graph(cls, kind: str, files: list[str], graph: Any, details: dict[str, Any] | None = None) -> Artifact:
        """An NCHW artifact of ``graph`` (a :class:`~ofa_deploy.graph.ir.Graph`): fed its input as ``input``,
        returning its output as ``output``."""
        shapes = list(graph.input_shape), list(graph.output_shape)
        return cls(kind, list(files), "input", shapes[0], "NCHW", "output", shapes[1], details or {})

    @property
    def main(self) -> str:
        return self.files[0]

    def check_kind(self, backend_name: str, accepted: tuple[str, ...], where: str) -> None:
        if self.kind not in accepted:
            raise BadInputError(
                f"{where}: the bundle holds a '{self.kind}' artifact; backend '{backend_name}' cannot run it "
                f"(it runs {', '.join(repr(k) for k in accepted) or 'no artifacts'}): compile the sub-network for it"
            )
