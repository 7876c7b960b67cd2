"""Every shipped device profile loads and names a real backend; bad profiles get one clear line."""

import json

import pytest

from ofa_deploy.backend.profiles import builtin_profile_names, load_profile
from ofa_deploy.backend.registry import backend_names
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError


@pytest.mark.parametrize("name", builtin_profile_names())
def test_every_shipped_profile_loads(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.backend in backend_names()
    assert profile.description and profile.timing.rounds >= 1
    backend = profile.create_backend(rounds=1)
    assert backend.timing.rounds == 1 and backend.timing.threads == profile.timing.threads


def test_required_profiles_exist():
    assert {"host-cpu", "xeon", "host-tflite"} <= set(builtin_profile_names())
    assert load_profile("host-cpu").backend == "onnxruntime"
    assert load_profile("xeon").backend == "openvino"
    assert load_profile("host-tflite").backend == "tflite"


def test_devices_json(capsys):
    assert main(["devices", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = {p["name"] for p in doc["profiles"]}
    assert {"host-cpu", "xeon", "host-tflite"} <= names
    assert doc["backends"]["onnxruntime"]["available"] is True


def test_devices_table(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "host-cpu" in out and "onnxruntime" in out


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: x\nbackend: onnxruntime\ncolour: red\n", "unknown key"),
        ("name: x\n", "needs 'backend'"),
        ("name: x\nbackend: warp-drive\n", "unknown backend"),
        ("name: x\nbackend: onnxruntime\ntiming: {threads: 0}\n", "positive integer"),
        ("name: x\nbackend: onnxruntime\ntiming: {speed: 3}\n", "unknown timing option"),
        ("name: x\nbackend: onnxruntime\nsettings: {colour: red}\n", "unknown setting"),
        ("name: x\nbackend: onnxruntime\nresolutions: [130]\n", "allowed values"),
        ("name: x\nbackend: onnxruntime\nwidth_mult: 2\n", "width multiplier"),
        ("[1, 2]\n", "YAML mapping"),
        ("name: [x\n", "invalid YAML"),
    ],
)
def test_bad_profiles(tmp_path, text, words):
    path = tmp_path / "device.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=words):
        load_profile(str(path))


def test_custom_profile_path_is_usable(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbackend: onnxruntime\nresolutions: [160]\ntiming: {threads: 2}\n")
    profile = load_profile(str(path))
    assert profile.resolutions == (160,) and profile.create_backend().timing.threads == 2


def test_ready_means_configured_and_reachable_with_the_reason(capsys, monkeypatch):
    """`ready` is not "the runtime imports": an adb profile without a benchmark_model binary or a
    phone, and a board profile without a tracker, are `no`, each with its reason."""
    monkeypatch.delenv("OFA_DEPLOY_BENCHMARK_MODEL", raising=False)
    assert main(["devices", "--json"]) == 0
    profiles = {p["name"]: p for p in json.loads(capsys.readouterr().out)["profiles"]}
    assert profiles["host-cpu"]["ready"] is True and profiles["host-cpu"]["reason"] == ""
    assert profiles["zcu102"]["ready"] is True and profiles["tvm-llvm-host"]["ready"] is True
    pixel2 = profiles["pixel2"]
    assert pixel2["available"] is True and pixel2["ready"] is False  # adb-shell imports; nothing to run on
    assert "benchmark_model" in pixel2["reason"] and "adb devices" in pixel2["reason"]
    orin = profiles["jetson-orin"]
    assert orin["ready"] is False and "--rpc-tracker HOST:PORT --rpc-key KEY" in orin["reason"]

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("pixel2 "))
    number = row.split("no (", 1)[1].split(")", 1)[0]
    assert f"  ({number}) no benchmark_model binary" in out  # the reason, once, under the table


def test_readiness_of_attached_phones_and_of_a_tracker(tmp_path, monkeypatch):
    import socket

    from ofa_deploy.backend.registry import backend_class

    pytest.importorskip("adb_shell", reason="the adb extra is not installed")
    pytest.importorskip("tvm", reason="the tvm extra is not installed")
    adb, tvm = backend_class("adb"), backend_class("tvm")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    settings = {"benchmark_model": str(binary)}
    status = adb.status()
    status.targets = [{"id": "R58M", "state": "unauthorized", "ready": False}]
    assert adb.readiness(settings, status) == "R58M is unauthorized"
    status.targets.append({"id": "emulator-5554", "state": "device", "ready": True})
    assert adb.readiness(settings, status) == ""
    assert "does not exist" in adb.readiness({"benchmark_model": str(tmp_path / "none")}, status)

    board = {"needs_device": True}
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        assert tvm.readiness({**board, "rpc_tracker": address, "rpc_key": "k"}, tvm.status()) == ""
    reason = tvm.readiness({**board, "rpc": address}, tvm.status())  # closed now
    assert reason == f"{address} does not accept a connection"
