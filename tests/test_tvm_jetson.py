"""Cross-building for Jetson boards on this machine, which has no GPU and no driver: the library must
be an AArch64 ELF holding *compiled* CUDA code (a cubin) for the board's sm_XX, not CUDA source.
No Jetson is involved: running the library needs the board (see docs/tvm.md)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

pytest.importorskip("tvm", reason="the tvm extra is not installed (pip install 'ofa-deploy[tvm]')")

from ofa_deploy.backend.artifact import EM_AARCH64, elf_machine
from ofa_deploy.backend.profiles import load_profile
from ofa_deploy.backends.tvm.build import cuda_architectures
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import resolution_ops

pytestmark = pytest.mark.slow  # TVM + NVRTC + the zig linker (its first run builds a glibc for aarch64)


def build_one_operator(profile: str) -> bytes:
    graph = build_graph([resolution_ops(160, 1.0)[30]])
    with load_profile(profile).create_backend() as backend:
        return backend.build(graph, "a test operator")


def test_compile_for_jetson_orin_is_aarch64_with_sm87_cubin(tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(160).to_dict()))
    bundle = tmp_path / "orin"
    assert (
        main(["compile", "--arch", str(arch), "--backend", "tvm", "--device", "jetson-orin", "--out", str(bundle)]) == 0
    )
    library = (bundle / "model.so").read_bytes()
    assert elf_machine(library) == EM_AARCH64
    assert cuda_architectures(library) and set(cuda_architectures(library)) == {87}
    assert b'extern "C" __global__' not in library  # compiled code, not CUDA source
    details = json.loads((bundle / "manifest.json").read_text())["artifact"]["details"]
    assert details["cuda_arch"] == "sm_87" and details["host_triple"] == "aarch64-linux-gnu"
    assert details["cuda_version"].startswith("12.") and details["tvm_version"].startswith("0.27")
    err = capsys.readouterr().err
    assert "newer than the board's JetPack CUDA 12.6" in err  # NVRTC 12.9 vs JetPack 6.1


@pytest.mark.parametrize("profile, sm", [("jetson-nano", 53), ("jetson-xavier-nx", 72)])
def test_older_boards_get_their_own_cubin(profile, sm):
    library = build_one_operator(profile)
    assert elf_machine(library) == EM_AARCH64 and cuda_architectures(library) == [sm]


def test_aarch64_cpu_profile_builds_an_arm_library_without_cuda():
    library = build_one_operator("aarch64-cpu")
    assert elf_machine(library) == EM_AARCH64 and cuda_architectures(library) == []


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is not None, reason="the apt cross-compiler is installed")
def test_missing_apt_cross_compiler_is_one_line_exit_3(tmp_path, capsys):
    doc = load_profile("jetson-orin").to_dict()
    doc.pop("source")
    doc["settings"]["cross_compiler"] = "gcc"
    path = tmp_path / "orin-gcc.yaml"
    path.write_text(yaml.safe_dump(doc))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(160).to_dict()))
    code = main(["compile", "--arch", str(arch), "--device", str(path), "--out", str(tmp_path / "b")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3 and "apt-get install g++-aarch64-linux-gnu" in line, line
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_benchmark_of_a_board_library_needs_the_board(tmp_path, capsys):
    """The orin bundle cannot run here: benchmark without a connection is exit 2 naming the flags."""
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(160).to_dict()))
    with load_profile("jetson-orin").create_backend() as backend:
        graph = build_graph(resolution_ops(160, 1.0)[:1])
        artifact = backend.compile(graph, tmp_path)
        with pytest.raises(BadInputError, match="--rpc-tracker"):
            backend.benchmark(tmp_path, artifact)
