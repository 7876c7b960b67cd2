"""The adb backend end to end: the real adb-shell client against a loopback ADB device
(tests/adb_device), which runs the pushed models with ai-edge-litert behind a benchmark_model
stand-in. No physical phone is involved."""

import json
import socket
import stat
import sys
import threading
import time

import pytest
import yaml

from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.adb.backend import AdbBackend, list_adb_devices
from ofa_deploy.backends.adb.benchmark_model_output import BenchmarkFailedError
from ofa_deploy.cli.main import main
from ofa_deploy.errors import RuntimeMissingError, TargetUnavailableError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.latency.profiling import reference_key
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import arch_ops, resolution_ops
from tests.adb_device import FakeAdbDevice
from tests.adb_device.server import failure_report

FAST = TimingOptions(threads=1, warmup=1, rounds=2, runs=3)
HOSTILE = "a b;touch PWNED'$(x)"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private config dir for the key, and no serial from the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        mp.delenv("ANDROID_SERIAL", raising=False)
        yield mp


@pytest.fixture(scope="module")
def device(env, tmp_path_factory):
    phone = FakeAdbDevice(tmp_path_factory.mktemp("phone")).start()
    phone.stub = phone.install_benchmark_stub(tmp_path_factory.mktemp("host-bin"))
    yield phone
    phone.stop()


def settings(device, **extra):
    return {
        "serial": device.serial,
        "benchmark_model": str(device.stub),
        "taskset": "f0",
        "retries": 1,
        "retry_delay_s": 0.05,
        "connect_timeout_s": 5,
        **extra,
    }


def device_dir(device, name="ofa-deploy"):
    return device.fs.root / "data" / "local" / "tmp" / name


def no_pwned(device, tmp_path):
    return not any(p.name.startswith("PWNED") for root in (device.fs.root, tmp_path) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def profile_yaml(device, tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "loopback-phone.yaml"
    doc = {
        "name": "loopback-phone",
        "description": "loopback ADB device (tests)",
        "backend": "adb",
        "resolutions": [160],
        "timing": {"threads": 1, "warmup": 1, "rounds": 2, "runs": 3},
        "settings": settings(device, batch_size=16),
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def adb_lut(device, profile_yaml, tmp_path_factory):
    """Profile r160 through the CLI, losing the phone mid-run, then resuming: (table path, exit codes, stderr)."""
    out = tmp_path_factory.mktemp("lut") / "phone.json"
    args = ["profile", "--device", str(profile_yaml), "--resolutions", "160", "--out", str(out), "--no-progress"]
    device.drop_after(60, offline=True)  # a few batches in: cable pulled, phone stays away
    capture = _Stderr()
    with capture:
        first = main([*args, "--rounds", "2", "--runs", "3"])
    partial = load_lut(out)
    device.back_online()
    second = main([*args, "--rounds", "2", "--runs", "3", "--resume"])
    return out, (first, second), capture.text, partial


class _Stderr:
    """Capture what the CLI writes to stderr in a module-scoped fixture (capsys is per test)."""

    def __enter__(self):
        import io

        self._saved, self._buffer = sys.stderr, io.StringIO()
        sys.stderr = self._buffer
        return self

    def __exit__(self, *exc):
        sys.stderr = self._saved
        self.text = self._buffer.getvalue()


def test_check_reports_the_phone_and_installs_the_binary(device):
    backend = AdbBackend(FAST, **settings(device))
    info = backend.check()
    assert info["model"] == "Pixel 2 (loopback)" and info["abi"] == "arm64-v8a"
    assert info["android"] == "11" and info["governor"] == "performance" and info["taskset"] == "f0"
    installed = device_dir(device) / "benchmark_model"
    assert installed.read_bytes() == device.stub.read_bytes() and installed.stat().st_mode & stat.S_IXUSR
    backend.close()
    assert not device_dir(device).exists()  # cleaned up after itself


def test_rsa_key_created_once_private_and_reused(device, tmp_path):
    from ofa_deploy.backends.adb.connection import config_dir

    for _ in range(2):
        AdbBackend(FAST, **settings(device)).check()
    key = config_dir() / "adbkey"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.with_name("adbkey.pub").is_file()
    assert device.new_key_prompts == 1  # the phone asked to allow this computer only once


def test_profile_survives_a_lost_phone_and_resumes(adb_lut):
    out, codes, err, partial = adb_lut
    assert codes == (3, 0)
    lines = [line for line in err.strip().splitlines() if not line.startswith("profiling ")]  # the start note
    assert len(lines) == 1 and "stopped answering" in lines[0] and "--resume" in lines[0]
    expected = {op.key for op in resolution_ops(160, 1.0)}
    kept = set(partial.tables.get(160, {}))
    assert 0 < len(kept) < len(expected)  # the batches measured before the drop were saved
    table = load_lut(out)
    assert set(table.tables[160]) == expected
    assert table.metadata.backend == "adb" and table.metadata.reference.key == reference_key(1.0)
    assert all(rec["estimate"] >= 0 and rec["count"] == 6 for rec in table.tables[160].values())


def test_profile_ran_benchmark_model_as_configured(device, adb_lut):
    flags = device.benchmark.runner.runs[-1]
    assert flags["num_threads"] == "1" and flags["num_runs"] == "3" and flags["warmup_runs"] == "1"
    assert flags["use_xnnpack"] == "true" and flags["min_secs"] == "0"
    assert set(device.fs.taskset_log.read_text().split()) == {"f0"}
    # one shell command per batch of 16 models, not one connection per key
    batches = [c for c in device.commands if c.endswith("sh batch.sh")]
    assert len(batches) <= len(resolution_ops(160, 1.0)) // 16 + 4
    assert not device_dir(device).exists()


def test_validate_on_the_phone(device, adb_lut, profile_yaml, tmp_path, capsys):
    """All sampled networks travel in one round trip; --serial (declared by the adb backend) wins
    over the profile's serial; the phone is cleaned up when the verb ends."""
    doc = yaml.safe_load(profile_yaml.read_text())
    doc["settings"]["serial"] = "127.0.0.1:1"  # nothing listens there: only the flag can make this work
    wrong = tmp_path / "wrong-serial.yaml"
    wrong.write_text(yaml.safe_dump(doc))
    out_dir = tmp_path / "val"
    args = ["validate", "--lut", str(adb_lut[0]), "--device", str(wrong), "--serial", device.serial]
    batches = sum(c.endswith("sh batch.sh") for c in device.commands)
    assert main([*args, "--samples", "4", "--out", str(out_dir), "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 4 and report["backend"] == "adb" and report["normalised_by_reference"]
    assert (out_dir / "measurements.csv").is_file()
    assert sum(c.endswith("sh batch.sh") for c in device.commands) - batches == 1
    assert not device_dir(device).exists()
    # a flag of another backend is refused before anything runs
    code = main(["profile", "--backend", "onnxruntime", "--serial", "x", "--out", str(tmp_path / "never.json")])
    assert code == 2 and "--serial is an option of backend adb" in capsys.readouterr().err
    assert not (tmp_path / "never.json").exists()


def test_reconnects_when_the_connection_drops_once(device):
    backend = AdbBackend(FAST, **settings(device, retries=2))
    ops = resolution_ops(160, 1.0)[:3]
    backend.check()
    device.drop_after(2, offline=False)
    stats = backend.measure(ops)
    assert list(stats) == [op.key for op in ops] and all(s.count == 6 for s in stats.values())
    assert backend.connection().reconnects == 1


def test_export_and_benchmark_with_hostile_names(device, tmp_path):
    hostile_dir = f"/data/local/tmp/{HOSTILE}"
    backend = AdbBackend(FAST, **settings(device, device_dir=hostile_dir))
    graph = build_graph(arch_ops(smallest_arch(160), 1.0))
    artifact = backend.compile(graph, tmp_path)
    name = f"{HOSTILE}.tflite"
    (tmp_path / artifact.main).rename(tmp_path / name)
    artifact.files[0] = name
    reference = backend.reference(reference_key(1.0))
    stats = backend.benchmark(tmp_path, artifact, reference)
    assert stats.count == 6 and stats.estimate > 0 and stats.reference_ms > 0
    assert any(p.endswith(f"/{HOSTILE}/models/{name}") for p in device.pushed)
    graphs = [run["graph"] for run in device.benchmark.runner.runs]
    assert f"models/{name}" in graphs  # the path reached benchmark_model intact
    backend.close()
    assert not device_dir(device, HOSTILE).exists()
    assert no_pwned(device, tmp_path)


def test_broken_model_names_the_file(device, tmp_path):
    backend = AdbBackend(FAST, **settings(device))
    artifact = backend.compile(build_graph(resolution_ops(160, 1.0)[:1]), tmp_path)
    (tmp_path / artifact.main).write_bytes(b"this is not a flatbuffer")
    with pytest.raises(BenchmarkFailedError, match="model.tflite"):
        backend.benchmark(tmp_path, artifact)


def test_a_crash_of_the_benchmark_stand_in_reaches_the_error_and_the_test_report(device, tmp_path, monkeypatch):
    """The stand-in's own failures explain themselves: the CLI-facing error names the exception, and
    the whole traceback is kept for the report of a failing test (tests/conftest.py)."""
    started = time.monotonic()
    backend = AdbBackend(FAST, **settings(device))
    artifact = backend.compile(build_graph(resolution_ops(160, 1.0)[:1]), tmp_path)

    def broken(argv, cwd="."):
        raise RuntimeError("the service broke")

    monkeypatch.setattr(device.benchmark.runner, "run", broken)  # the service itself crashes
    with pytest.raises(BenchmarkFailedError, match="loopback benchmark service failed: RuntimeError"):
        backend.benchmark(tmp_path, artifact)
    monkeypatch.undo()
    environment = device.shell_env()
    monkeypatch.setattr(device, "shell_env", lambda: {**environment, "OFA_FAKE_BENCH_SOCKET": str(tmp_path / "gone")})
    with pytest.raises(BenchmarkFailedError, match="crashed on .*model.tflite: FileNotFoundError"):
        backend.benchmark(tmp_path, artifact)  # the stub crashes: its exception, not "binary missing"
    report = failure_report()
    assert f"device {device.serial}:" in report and 'raise RuntimeError("the service broke")' in report
    assert "Traceback (most recent call last)" in report and "conn.connect(path)" in report
    recent = failure_report(since=started)  # what the report of this test shows: with the service's state
    assert f"device {device.serial} (live; benchmark service listening" in recent
    assert f"benchmark service of loopback device {device.serial} at {tmp_path / 'gone'}" in recent
    backend.close()


def test_closing_with_a_command_in_flight_does_not_wait_for_it(device, tmp_path, monkeypatch):
    """Ctrl-C during a benchmark closes the backend (or Python's exit runs its finalizer) while another
    thread still waits on the phone: the clean-up is skipped instead of queueing behind that command.
    (It did queue: `deploy` then hung after Ctrl-C until the phone answered.)"""
    backend = AdbBackend(FAST, **settings(device, device_dir="/data/local/tmp/in-flight"))
    artifact = backend.compile(build_graph(resolution_ops(160, 1.0)[:1]), tmp_path)
    gate, reached = threading.Event(), threading.Event()
    original = device.benchmark.runner.run

    def held(argv, cwd="."):
        reached.set()
        gate.wait(60)
        return original(argv, cwd)

    monkeypatch.setattr(device.benchmark.runner, "run", held)
    worker = threading.Thread(target=lambda: backend.benchmark(tmp_path, artifact), daemon=True)
    worker.start()
    try:
        assert reached.wait(60), "the benchmark never reached the phone"
        closer = threading.Thread(target=backend.close, daemon=True)
        closer.start()
        closer.join(timeout=20)  # the held command would keep it for 60 s
        assert not closer.is_alive(), "close() waited for the command in flight"
    finally:
        gate.set()
        worker.join(60)


def test_frequency_check_refuses_a_throttled_phone(device):
    backend = AdbBackend(FAST, **settings(device, min_freq_khz=2_000_000, cooldown_s=0.01))
    ops = resolution_ops(160, 1.0)[:1]
    assert backend.measure(ops)[ops[0].key].count == 6
    device.fs.set_frequency(300_000)
    try:
        with pytest.raises(TargetUnavailableError, match="only 300000 kHz under load, below min_freq_khz 2000000"):
            backend.measure(ops)
    finally:
        device.fs.set_frequency(2_457_600)


def test_unreachable_phone_and_missing_binary_are_one_line(device, profile_yaml, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    gone = AdbBackend(FAST, **settings(device, serial=f"127.0.0.1:{closed_port}", retries=0))
    with pytest.raises(TargetUnavailableError, match="cannot connect to adb device 127.0.0.1"):
        gone.check()
    no_binary = AdbBackend(FAST, **{**settings(device), "benchmark_model": str(tmp_path / "nope")})
    with pytest.raises(TargetUnavailableError, match="does not exist"):
        no_binary.check()
    doc = yaml.safe_load(profile_yaml.read_text())
    doc["settings"]["serial"] = f"127.0.0.1:{closed_port}"
    doc["settings"]["retries"] = 0
    bad = tmp_path / "gone.yaml"
    bad.write_text(yaml.safe_dump(doc))
    code = main(["profile", "--device", str(bad), "--resolutions", "160", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "adb connect" in err[0]


def test_missing_adb_shell_names_the_extra(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "adb_shell", None)
    with pytest.raises(RuntimeMissingError, match=r"pip install 'ofa-deploy\[adb\]'"):
        AdbBackend(FAST).runtime_info()


def test_list_adb_devices_from_the_adb_server(env, capsys, monkeypatch):
    """The adb backend's attached targets come from the adb server's ``host:devices`` answer, and
    ``devices`` shows them without knowing anything about adb."""
    reply = b"0123456789ABCDEF\tdevice\n192.168.1.7:5555\toffline\n"
    server = socket.create_server(("127.0.0.1", 0))

    def answer(times):
        for _ in range(times):
            conn, _ = server.accept()
            with conn:
                request = conn.recv(64)
                assert request == b"000chost:devices"
                conn.sendall(b"OKAY%04x" % len(reply) + reply)

    port = server.getsockname()[1]
    expected = [
        {"serial": "0123456789ABCDEF", "state": "device"},
        {"serial": "192.168.1.7:5555", "state": "offline"},
    ]
    thread = threading.Thread(target=answer, args=(3,), daemon=True)
    thread.start()
    assert list_adb_devices(port=port) == expected
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    assert main(["devices", "--json"]) == 0
    targets = json.loads(capsys.readouterr().out)["backends"]["adb"]["targets"]
    assert targets == [  # one record for every backend: the id --serial takes, and whether it is usable
        {"id": "0123456789ABCDEF", "state": "device", "ready": True},
        {"id": "192.168.1.7:5555", "state": "offline", "ready": False},
    ]
    assert main(["devices"]) == 0  # the table names the flag that selects a phone
    assert "Targets of 'adb' (use with --serial)" in capsys.readouterr().out
    thread.join(5)
    server.close()
    assert list_adb_devices(port=port) == []  # no server: nothing, quickly


def test_compile_and_benchmark_a_subnet_on_the_phone(adb_lut, profile_yaml, tmp_path, capsys):
    """The CLI path a user takes: compile a searched sub-network for the phone, benchmark it there,
    and compare with the phone's latency table."""
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(160).to_dict()))
    bundle = tmp_path / "bundle"
    lut = str(adb_lut[0])
    assert (
        main(["compile", "--arch", str(arch), "--device", str(profile_yaml), "--lut", lut, "--out", str(bundle)]) == 0
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["artifact"]["files"][0] == "model.tflite" and manifest["verification"]["passed"]
    assert manifest["backend"]["name"] == "adb" and manifest["predicted_latency"]["ms"] > 0
    capsys.readouterr()
    assert (
        main(["benchmark", str(bundle), "--device", str(profile_yaml), "--json", "--rounds", "2", "--runs", "3"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "adb" and result["normalised_by_reference"]
    assert result["measured_ms"] > 0 and result["predicted_ms"] == manifest["predicted_latency"]["ms"]
    assert "error_percent" in result
    assert len(json.loads((bundle / "manifest.json").read_text())["measurements"]) == 1


def test_no_serial_and_no_usb_phone_is_exit_3(env, device, tmp_path, capsys, monkeypatch):
    """Without --serial the backend looks for a USB phone; none here (or no USB support): one line, exit 3."""
    monkeypatch.setenv("OFA_DEPLOY_BENCHMARK_MODEL", str(device.stub))
    code = main(["profile", "--backend", "adb", "--resolutions", "160", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "--serial" in err[0], err


def test_key_pair_made_once_when_devices_are_reached_in_parallel(tmp_path):
    """Deploy and sharded profiles reach several devices at once: none may read a half-written key."""
    from concurrent.futures import ThreadPoolExecutor

    from ofa_deploy.backends.adb.connection import ensure_adb_key
    from tests.adb_device.auth import parse_public_key

    path = tmp_path / "adbkey"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: ensure_adb_key(path).read_bytes(), range(8)))
    assert len(set(made)) == 1 and b"PRIVATE KEY" in made[0]
    parse_public_key((tmp_path / "adbkey.pub").read_bytes())


def test_a_stopped_phone_accepts_no_connection(tmp_path):
    """The stand-in's stop() really stops: its port refuses connections at once, and a connection it
    held is hung up. (A listener only closed, while its accept loop waited, still took the next
    connection and served it with the stopped benchmark service: 'Connection refused' from the stub.)"""
    phone = FakeAdbDevice(tmp_path / "phone").start()
    held = socket.create_connection(("127.0.0.1", phone.port), timeout=5)
    deadline = time.monotonic() + 5
    while phone.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    phone.stop()
    assert held.recv(1) == b""  # hung up, not left waiting
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", phone.port), timeout=5)
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(phone.benchmark.socket_path))
    assert "stopped" in phone.benchmark.state()
    held.close()
