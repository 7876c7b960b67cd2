"""`ofa-deploy doctor` against the closest real things this machine has: loopback phones (one with a
benchmark_model, one without, one built for another ABI, one that never authorizes this computer),
a loopback TVM tracker with a server, and an NVIDIA driver that is not there. Each failure shows
its documented fix, and the exit code says whether the target checked is ready (0) or not (3)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ofa_deploy.cli.main import main
from tests.adb_device.fixtures import private_adb_env
from tests.adb_device.server import FakeAdbDevice

BINARY_ENV = "OFA_DEPLOY_BENCHMARK_MODEL"


@pytest.fixture(scope="module")
def phones(tmp_path_factory):
    """An authorizing phone and one that never taps 'Allow', with the host's benchmark_model stub."""
    with private_adb_env(tmp_path_factory):
        good = FakeAdbDevice(tmp_path_factory.mktemp("phone")).start()
        refusing = FakeAdbDevice(tmp_path_factory.mktemp("refusing"), accept_new_keys=False).start()
        good.stub = good.install_benchmark_stub(tmp_path_factory.mktemp("host-bin"))
        try:
            yield good, refusing
        finally:
            good.stop()
            refusing.stop()


@pytest.fixture(scope="module")
def phone_profile(tmp_path_factory):
    """The loopback phones' profile: short connection timeouts, one try (a refusing phone fails fast)."""
    path = tmp_path_factory.mktemp("profile") / "loopback-doctor.yaml"
    settings = {"retries": 0, "connect_timeout_s": 3, "auth_timeout_s": 3}
    doc = {"name": "loopback-doctor", "description": "loopback phone (tests)", "backend": "adb", "settings": settings}
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def doctor(capsys, *args: str) -> tuple[int, dict]:
    code = main(["doctor", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def findings(doc: dict) -> dict[str, dict]:
    [target] = doc["targets"]
    return {f["check"]: f for f in target["findings"]}


def test_a_phone_with_benchmark_model_is_ready_after_a_trial_run(phones, phone_profile, capsys, monkeypatch):
    good, _ = phones
    monkeypatch.setenv(BINARY_ENV, str(good.stub))
    code, doc = doctor(capsys, "--device", phone_profile, "--serial", good.serial)
    found = findings(doc)
    assert code == 0 and doc["ready"] is True, found
    phone = found[f"phone {good.serial}"]
    assert phone["verdict"] == "ok" and "Pixel 2 (loopback)" in phone["detail"] and "arm64-v8a" in phone["detail"]
    assert found[f"phone {good.serial} trial run"]["verdict"] == "ok"
    assert "benchmark_model ran" in found[f"phone {good.serial} trial run"]["detail"]
    assert found["benchmark_model"]["verdict"] == "info"  # the stub is a script, not an ELF binary
    assert f"phone {good.serial} governor" not in found  # the loopback phone runs "performance"


def test_without_benchmark_model_the_fix_says_where_it_comes_from(phones, phone_profile, capsys, monkeypatch):
    good, _ = phones
    monkeypatch.delenv(BINARY_ENV, raising=False)
    assert main(["doctor", "--device", phone_profile, "--serial", good.serial]) == 3
    out = capsys.readouterr().out
    assert "FAIL  benchmark_model" in out and f"fix: export {BINARY_ENV}=" in out and "docs/adb.md" in out
    assert "not ready" in out


def test_a_binary_for_another_abi_is_named_before_any_run(phones, phone_profile, capsys, monkeypatch, tmp_path):
    good, _ = phones
    x86 = tmp_path / "benchmark_model"
    shutil.copy(shutil.which("true") or "/bin/true", x86)  # an x86-64 ELF executable, like a wrong download
    monkeypatch.setenv(BINARY_ENV, str(x86))
    code, doc = doctor(capsys, "--device", phone_profile, "--serial", good.serial)
    found = findings(doc)
    assert code == 3
    assert found["benchmark_model"]["verdict"] == "ok" and "x86_64" in found["benchmark_model"]["detail"]
    abi = found[f"phone {good.serial} ABI"]
    assert abi["verdict"] == "fail" and "arm64-v8a" in abi["detail"] and "arm64-v8a" in abi["fix"]


def test_a_phone_that_never_authorizes_this_computer_gets_the_allow_prompt_fix(
    phones, phone_profile, capsys, monkeypatch
):
    good, refusing = phones
    monkeypatch.setenv(BINARY_ENV, str(good.stub))
    code, doc = doctor(capsys, "--device", phone_profile, "--serial", refusing.serial)
    phone = findings(doc)[f"phone {refusing.serial}"]
    assert code == 3 and phone["verdict"] == "fail"
    assert "Allow USB debugging?" in phone["fix"] and "adbkey.pub" in phone["fix"]


def test_the_adb_server_is_in_the_way_of_usb_phones_only():
    from ofa_deploy.backends.adb.doctor import server_finding

    usb = server_finding(["0123456789ABCDEF"], running=True)
    assert usb.verdict.value == "fail" and usb.fix.startswith("adb kill-server")
    assert server_finding(["192.168.1.20:5555"], running=True).verdict.value == "ok"
    assert server_finding(["0123456789ABCDEF"], running=False).verdict.value == "ok"


def test_a_missing_nvidia_driver_is_named_with_its_fix(capsys, monkeypatch):
    from ofa_deploy.backends.nvidia import gpu

    monkeypatch.setattr(gpu, "DRIVER_LIBRARY", "libcuda-not-installed.so.1")  # the same answer on a GPU machine
    code, doc = doctor(capsys, "--backend", "nvidia")
    driver = findings(doc)["driver"]
    assert code == 3 and driver["verdict"] == "fail"
    assert "no NVIDIA driver" in driver["detail"] and "nvidia-smi" in driver["fix"]


def test_a_tvm_board_behind_a_tracker(tmp_path, capsys):
    """A tracker with one server under the key: the session opens (the RPC handshake); under another
    key, the fix is the command that starts a server on the board."""
    pytest.importorskip("tvm", reason="the tvm extra is not installed (pip install 'ofa-deploy[tvm]')")
    from tests.tvm_rpc_cluster import rpc_cluster

    with rpc_cluster(tmp_path, servers=1, key="ofa-doctor") as cluster:
        cluster.wait_free(1)
        board = ["--backend", "tvm", "--rpc-tracker", cluster.tracker_address, "--rpc-timeout", "20"]
        code, doc = doctor(capsys, *board, "--rpc-key", "ofa-doctor")
        found = findings(doc)
        assert code == 0, found
        assert found["tracker"]["verdict"] == "ok" and "1 server(s) under 'ofa-doctor'" in found["tracker"]["detail"]
        assert found["board session"]["verdict"] == "ok" and "apache-tvm" in found["board session"]["detail"]
        code, doc = doctor(capsys, *board, "--rpc-key", "jetson-orin")
        tracker = findings(doc)["tracker"]
        assert (
            code == 3
            and tracker["verdict"] == "fail"
            and "no server registered under 'jetson-orin'" in tracker["detail"]
        )
        assert "tvm.exec.rpc_server" in tracker["fix"] and "--key jetson-orin" in tracker["fix"]


def test_bare_doctor_checks_every_backend_and_answers_for_the_demo_target(capsys, monkeypatch):
    monkeypatch.delenv(BINARY_ENV, raising=False)
    assert main(["doctor"]) == 0  # the host CPU is ready; a missing phone or GPU does not make it 3
    out = capsys.readouterr().out
    assert "onnxruntime (device profile host-cpu): ready" in out
    assert "adb (device profile android): not ready" in out and "fix: export" in out
    assert "fpga (device profile dpu-b4096): ready" in out and "cannot give" in out
    assert out.rstrip().endswith("other targets as listed")


def test_a_missing_runtime_is_a_failure_with_the_install_command(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    code, doc = doctor(capsys, "--device", "host-cpu")
    runtime = findings(doc)["runtime"]
    assert code == 3 and runtime["verdict"] == "fail" and runtime["fix"] == "pip install onnxruntime"
