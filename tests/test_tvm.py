"""The tvm backend without a tracker: settings, profiles, connection errors (exit codes within the
deadline), and in-process llvm measuring and compile + verify + benchmark on this machine's CPU."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytest.importorskip("tvm", reason="the tvm extra is not installed (pip install 'ofa-deploy[tvm]')")

from ofa_deploy.backend.artifact import EM_X86_64, elf_machine
from ofa_deploy.backend.build_cache import content_key
from ofa_deploy.backend.profiles import builtin_profile_names, load_profile
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.tvm.backend import TvmBackend
from ofa_deploy.backends.tvm.build import BuildSpec, build_identity, parse_target
from ofa_deploy.backends.tvm.cuda import cuda_newer_than_board
from ofa_deploy.backends.tvm.rpc import Endpoint, TrackerClient
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError, TargetUnavailableError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.latency.profiling import reference_key
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import resolution_ops

FAST = TimingOptions(threads=1, warmup=1, rounds=3, runs=3)
TVM_PROFILES = [n for n in builtin_profile_names() if load_profile(n).backend == "tvm"]


def one_line_error(capsys) -> str:
    """The error line (after the verb's own 'profiling ...' note, if any), and no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    assert len([line for line in err if line.startswith("error")]) <= 1, err
    return err[-1]


@pytest.mark.parametrize("name", TVM_PROFILES)
def test_every_tvm_profile_parses_into_a_target(name):
    profile = load_profile(name)
    backend = profile.create_backend()
    target = parse_target(backend.spec.target, "target")
    assert target["kind"] in ("llvm", "cuda")
    if target["kind"] == "cuda":  # a board: CUDA arch, an aarch64 host, the JetPack CUDA, a device needed
        assert backend.spec.cuda_arch.startswith("sm_") and backend.spec.triple == "aarch64-linux-gnu"
        assert backend.settings.board_cuda and backend.settings.needs_device
    assert not any(k.startswith("rpc_") and k != "rpc_timeout" and v for k, v in backend.settings.to_dict().items())


def test_expected_boards_and_architectures():
    archs = {n: load_profile(n).create_backend().spec.cuda_arch for n in TVM_PROFILES}
    assert archs["jetson-nano"] == "sm_53" and archs["jetson-tx2"] == "sm_62"
    assert archs["jetson-xavier-nx"] == archs["jetson-agx-xavier"] == "sm_72" and archs["jetson-orin"] == "sm_87"
    assert archs["tvm-llvm-host"] is None and archs["aarch64-cpu"] is None
    assert load_profile("aarch64-cpu").create_backend().spec.triple == "aarch64-linux-gnu"


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"rpc_tracker": "127.0.0.1:9190"}, "--rpc-key"),
        ({"rpc_key": "jetson"}, "--rpc-tracker"),
        ({"rpc": "127.0.0.1:9090", "rpc_tracker": "127.0.0.1:9190", "rpc_key": "k"}, "not both"),
        ({"rpc": "no-port"}, "HOST:PORT"),
        ({"rpc_tracker": "127.0.0.1:70000", "rpc_key": "k"}, "HOST:PORT"),
        ({"rpc_timeout": 0}, "rpc_timeout"),
        ({"cross_compiler": "msvc"}, "cross_compiler"),
        ({"target": "{not json"}, "JSON"),
        ({"board_cuda": "jetpack"}, "board_cuda"),
    ],
)
def test_bad_settings_are_one_bad_input_error(settings, fragment):
    with pytest.raises(BadInputError, match=fragment):
        TvmBackend(FAST, **settings)


def test_board_profile_without_a_connection_is_exit_2(tmp_path, capsys):
    code = main(["profile", "--device", "jetson-orin", "--resolutions", "160", "--out", str(tmp_path / "t.json")])
    line = one_line_error(capsys)
    assert code == 2 and "--rpc-tracker" in line, line


def test_flag_of_tvm_refused_for_another_backend(tmp_path, capsys):
    code = main(["profile", "--backend", "onnxruntime", "--rpc", "127.0.0.1:9090", "--out", str(tmp_path / "t.json")])
    assert code == 2 and "--rpc" in one_line_error(capsys)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.serial  # a bound on wall time: run without the other serial tests
def test_dead_tracker_is_exit_3_at_once(tmp_path, capsys):
    started = time.monotonic()
    code = main(
        [
            "profile",
            "--backend",
            "tvm",
            "--rpc-tracker",
            f"127.0.0.1:{_closed_port()}",
            "--rpc-key",
            "jetson",
            "--resolutions",
            "160",
            "--out",
            str(tmp_path / "t.json"),
        ]
    )
    line = one_line_error(capsys)
    assert code == 3 and "no TVM RPC tracker" in line, line
    assert time.monotonic() - started < 15  # TVM's own connect_tracker would retry for about a minute


def test_dead_direct_server_is_exit_3(tmp_path, capsys):
    code = main(["profile", "--backend", "tvm", "--rpc", f"127.0.0.1:{_closed_port()}", "--out", str(tmp_path / "t")])
    line = one_line_error(capsys)
    assert code == 3 and "no TVM RPC server" in line, line


@pytest.mark.serial  # a bound on wall time: run without the other serial tests
def test_silent_tracker_request_times_out():
    """A listener that accepts and never answers: the handshake itself is bounded by the timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        with pytest.raises(TargetUnavailableError):
            TrackerClient(Endpoint("127.0.0.1", server.getsockname()[1]), 1.0)
        assert time.monotonic() - started < 5


def test_cuda_newer_than_jetpack_is_warned():
    assert "newer than the board's JetPack CUDA 10.2" in cuda_newer_than_board((12, 9), "10.2")
    assert cuda_newer_than_board((12, 2), "12.6") is None
    assert cuda_newer_than_board((12, 9), None) is None


def test_in_process_measures_operators_with_the_reference():
    ops = resolution_ops(160, 1.0)
    with TvmBackend(FAST) as backend:
        reference = backend.reference(reference_key(1.0))
        results = backend.measure([ops[0], ops[2], ops[3]], reference)
        overhead = backend.measure_overhead(reference).estimate
    assert reference.baseline_ms > 0 and not backend.settings.needs_device
    small, large = results[ops[2].key], results[ops[3].key]  # same block, expand 48 vs 64
    assert all(r.count == FAST.rounds * FAST.runs and r.reference_ms > 0 for r in results.values())
    assert large.raw_estimate > small.raw_estimate  # more channels cost more on the real runtime
    assert 0 < overhead < small.estimate
    assert backend.devices_used == 1 and backend.times_on_host


def test_a_library_is_built_once_then_read_from_the_build_cache(tmp_path):
    """The same operator for the same target: a second backend builds nothing; a damaged entry is
    built again; another linker, target or TVM is another key."""
    graph = build_graph([resolution_ops(160, 1.0)[1]])
    with TvmBackend(FAST, build_cache=str(tmp_path)) as first:
        library = first.build(graph, "an operator")
        assert (first.pool.built, first.pool.reused) == (1, 0)
    (entry,) = tmp_path.glob("*.so")
    assert entry.read_bytes() == library and elf_machine(library) == EM_X86_64
    with TvmBackend(FAST, build_cache=str(tmp_path)) as second:
        assert second.build(graph, "an operator") == library
        assert (second.pool.built, second.pool.reused) == (0, 1)
    entry.write_bytes(b"half a library")
    with TvmBackend(FAST, build_cache=str(tmp_path)) as third:
        assert elf_machine(third.build(graph, "an operator")) == EM_X86_64
        assert (third.pool.built, third.pool.reused) == (1, 0)
    assert elf_machine(entry.read_bytes()) == EM_X86_64  # stored again
    assert TvmBackend(FAST, build_cache="off").pool.cache is None
    onnx = TvmBackend(FAST).encode(graph)
    host = build_identity(BuildSpec("llvm", None, "host"))
    assert content_key(onnx, host) == content_key(onnx, build_identity(BuildSpec("llvm", None, "host")))
    assert content_key(onnx, host) != content_key(onnx, build_identity(BuildSpec("llvm", None, "zig")))
    assert content_key(onnx, host) != content_key(
        onnx, build_identity(BuildSpec('{"kind": "llvm", "mcpu": "znver3"}', None, "host"))
    )
    assert content_key(onnx, host) != content_key(onnx, {**host, "apache-tvm": "0.28.0"})


def test_compile_verify_and_benchmark_in_process(tmp_path, capsys):
    """compile --backend tvm: an x86-64 library verified against torch, then benchmarked in-process."""
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(160).to_dict()))
    bundle = tmp_path / "bundle"
    assert main(["compile", "--arch", str(arch), "--backend", "tvm", "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    artifact = manifest["artifact"]
    assert artifact["kind"] == "tvm-library" and artifact["main"] == "model.so"
    assert artifact["details"]["elf_machine"] == 62 and artifact["details"]["tvm_version"].startswith("0.27")
    assert manifest["verification"]["passed"] is True  # TVM's outputs match torch
    capsys.readouterr()
    flags = ["--json", "--rounds", "3", "--runs", "3", "--trust-native-code"]  # our own bundle: its library may load
    code = main(["benchmark", str(bundle), "--backend", "tvm", *flags])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["backend"] == "tvm" and result["measured_ms"] > 0


def test_a_device_that_finished_its_jobs_waits_for_a_job_that_may_fail_over(monkeypatch):
    """Two devices, two jobs: device 0 finishes its job while device 1 still times the other, then
    device 1 is lost with no replacement. Its job comes back to the queue and device 0 must take it.
    (Device 0 used to leave as soon as the queue was empty: the job was never timed and the profile
    failed with 'no replacement' although a device was alive; seen under load in test_tvm_rpc.)"""
    from ofa_deploy.backends.tvm.backend import _Job
    from ofa_deploy.backends.tvm.rpc import DeviceLostError

    class Session:
        def __init__(self, name):
            self.name = name

        def close(self):
            pass

    first_done, timed_by, both_busy, started = threading.Event(), [], threading.Barrier(2, timeout=30), set()

    def time_job(session, job, reference):
        if session.name not in started:  # each device holds a job before either finishes
            started.add(session.name)
            both_busy.wait()
        if session.name == "device-1" and not first_done.wait(timeout=30):
            raise AssertionError("device 0 never finished its job")
        if session.name == "device-1":
            time.sleep(0.2)  # device 0 has long reached the empty queue
            raise DeviceLostError("the board went away")
        timed_by.append((session.name, job.label))
        first_done.set()
        return job.label

    def no_replacement(index):
        raise TargetUnavailableError("no free TVM RPC server")

    with TvmBackend(FAST) as backend:
        backend._sessions = [Session("device-0"), Session("device-1")]
        monkeypatch.setattr(backend, "_time_job", time_job)
        monkeypatch.setattr(backend, "_open_session", no_replacement)
        jobs = [_Job("a", b"", (1,)), _Job("b", b"", (1,))]
        assert backend._run(jobs, None) == ["a", "b"]
        backend._sessions = []
    assert sorted(timed_by) == [("device-0", "a"), ("device-0", "b")]
