"""A bundle or a latency table carries data, never configuration (issue 23, items 1-3), reproduced
through the CLI on loopback ADB phones (tests/adb_device) and a forged TVM bundle:

1. settings a manifest or a LUT records are measurement settings only; a planted local one (a key
   path, a benchmark_model binary, a serial, a device directory) is ignored with one warning;
   ``deploy --verify-key`` refuses an unsigned bundle before any device is reached;
2. a TVM bundle's shared library is not opened in-process without ``--trust-native-code`` or a
   verified signature (exit 2, one line);
3. two runs on one phone take turns through a device-side lock: the second waits for the first
   (``busy_timeout_s``) and, past it, is refused with exit 2; neither deletes the other's files.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time

import pytest
import yaml

from ofa_deploy.backend.registry import backend_class
from ofa_deploy.backend.settings import LOCAL, MEASUREMENT, BackendSettings, setting
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.adb.backend import AdbBackend
from ofa_deploy.cli.main import main
from ofa_deploy.deploy.integrity import manifest_digest
from ofa_deploy.space.ops import resolution_ops
from tests.adb_device.fixtures import private_adb_env, started_phones

ARCH = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}
FAST = ["--rounds", "1", "--runs", "2"]
WARNING = "records local setting(s)"
EXPECTED_LOCAL = {
    "adb": {"serial", "benchmark_model", "key_path", "device_dir", "install_dir", "cleanup"}
    | {"busy_timeout_s", "auth_timeout_s", "connect_timeout_s", "command_timeout_s", "retries", "retry_delay_s"},
    "tvm": {"rpc_tracker", "rpc_key", "rpc", "rpc_timeout", "rpc_sessions", "build_workers", "build_cache"},
    "nvidia": {"device_index", "engine_cache"},
    "onnxruntime": set(),
    "openvino": set(),
    "tflite": set(),
    "fpga": set(),
}


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def phones(tmp_path_factory):
    with started_phones(tmp_path_factory, 2) as devices:
        yield devices


@pytest.fixture(scope="module")
def stub(phones, tmp_path_factory):
    """The host's benchmark_model stand-in (what the loopback phones run)."""
    return phones[0].install_benchmark_stub(tmp_path_factory.mktemp("host-bin"))


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory, stub):
    """A private ADB key, no $ANDROID_SERIAL, and the binary given by the environment (not the profile)."""
    with private_adb_env(tmp_path_factory, OFA_DEPLOY_BENCHMARK_MODEL=str(stub)) as mp:
        yield mp


def write_profile(directory, **settings) -> str:
    """A device profile naming no serial, binary, key or directory: those come from flags and the environment."""
    path = directory / "phone.yaml"
    doc = {
        "name": "loopback-phone",
        "description": "loopback ADB device (tests)",
        "backend": "adb",
        "resolutions": [160],
        "timing": {"threads": 1, "warmup": 1, "rounds": 1, "runs": 2},
        "settings": {"retries": 1, "retry_delay_s": 0.05, "connect_timeout_s": 5, **settings},
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return write_profile(tmp_path_factory.mktemp("profile"))


@pytest.fixture(scope="module")
def tflite_bundle(tmp_path_factory):
    arch = tmp_path_factory.mktemp("arch") / "arch.json"
    arch.write_text(json.dumps(ARCH))
    out = tmp_path_factory.mktemp("bundles") / "small-160"
    assert main(["compile", "--arch", str(arch), "--backend", "tflite", "--out", str(out)]) == 0
    return out


def forge(bundle, directory, edit):
    """A copy of ``bundle`` edited the way a careful forger would: content changed, digest recomputed."""
    copy = directory / "forged"
    shutil.copytree(bundle, copy)
    path = copy / "manifest.json"
    document = json.loads(path.read_text())
    edit(document)
    document["manifest_sha256"] = manifest_digest(document)
    path.write_text(json.dumps(document))
    return copy


def adb_bundle_with(bundle, directory, **planted):
    """The bundle claiming it was compiled for adb with ``planted`` local settings."""

    def edit(document):
        document["backend"]["name"] = "adb"
        document["backend"]["settings"] = {"xnnpack": True, **planted}

    return forge(bundle, directory, edit)


def one_warning(capsys, *names) -> None:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    warnings = [line for line in err if WARNING in line]
    assert len(warnings) == 1, err
    assert all(name in warnings[0] for name in names), warnings[0]


def benchmark(bundle, profile, *extra) -> int:
    return main(["benchmark", str(bundle), "--device", profile, *FAST, "--json", *extra])


# ---------------------------------------------------------------------- item 1: the rule, in the interface


@pytest.mark.parametrize("name", sorted(EXPECTED_LOCAL))
def test_every_backend_classifies_its_settings(name):
    """Paths, serials, keys, binaries, directories, clean-up and connection fields are local."""
    settings = backend_class(name).Settings
    assert settings.local_fields() == EXPECTED_LOCAL[name]
    recorded = settings().recorded()
    assert not set(recorded) & settings.local_fields()
    assert set(recorded) | settings.local_fields() == set(settings().to_dict())


def test_from_record_keeps_measurement_settings_and_names_planted_local_ones():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Knobs(BackendSettings):
        precision: str = setting("fp32", "what was measured", MEASUREMENT)
        where: str = setting("/default", "a path on the device", LOCAL)
        plugin_field: int = 3  # a plugin's plain field: a measurement one

    kept, ignored = Knobs.from_record({"precision": "fp16", "where": "/sdcard", "plugin_field": 4})
    assert kept == {"precision": "fp16", "plugin_field": 4} and ignored == ["where"]
    assert Knobs.from_record({"where": "/default"}) == ({}, [])  # the default changes nothing: no warning
    with pytest.raises(ValueError, match="kind"):
        setting(1, "x", "secret")


# ---------------------------------------------------------------------- item 1: the attacks, through the CLI


def test_compile_records_no_local_setting(phones, tflite_bundle, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    key = tmp_path / "keys" / "adbkey"
    yaml_path = write_profile(tmp_path, key_path=str(key), device_dir="/data/local/tmp/elsewhere", cleanup=True)
    out = tmp_path / "bundle"
    args = ["compile", "--arch", str(arch), "--device", yaml_path, "--serial", phones[0].serial, "--out", str(out)]
    assert main(args) == 0
    backend = json.loads((out / "manifest.json").read_text())["backend"]
    assert not set(backend["settings"]) & EXPECTED_LOCAL["adb"] and backend["settings"]["xnnpack"] is True
    assert phones[0].serial not in json.dumps(backend) and str(key) not in json.dumps(backend)


def test_planted_key_path_does_not_overwrite_a_host_file(phones, profile, tflite_bundle, tmp_path, capsys):
    victim = tmp_path / "thesis.tex"
    victim.write_text("three years of work\n")
    forged = adb_bundle_with(tflite_bundle, tmp_path, key_path=str(victim))
    assert benchmark(forged, profile, "--serial", phones[0].serial) == 0
    assert victim.read_text() == "three years of work\n" and not (tmp_path / "thesis.tex.pub").exists()
    one_warning(capsys, "key_path")


def test_planted_benchmark_model_is_not_pushed_or_run(phones, profile, tflite_bundle, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil-benchmark-model"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    forged = adb_bundle_with(tflite_bundle, tmp_path, benchmark_model=str(evil))
    assert benchmark(forged, profile, "--serial", phones[0].serial) == 0  # the stub from the environment ran
    assert not marker.exists()
    one_warning(capsys, "benchmark_model")


def test_planted_serial_does_not_override_android_serial(phones, profile, tflite_bundle, tmp_path, capsys, monkeypatch):
    mine, other = phones
    monkeypatch.setenv("ANDROID_SERIAL", mine.serial)
    forged = adb_bundle_with(tflite_bundle, tmp_path, serial=other.serial)
    before = other.requests, other.connections
    args = ["deploy", str(forged), "--device", profile, *FAST, "--tolerance", "1e9", "--no-progress", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["devices"][0]["device"] == mine.serial
    assert (other.requests, other.connections) == before  # the other phone was never reached
    assert (forged / "deployments").is_dir()


def test_planted_device_dir_does_not_wipe_the_phones_files(phones, profile, tflite_bundle, tmp_path, capsys):
    phone = phones[0]
    photo = phone.fs.host_path("/sdcard/models/holiday.jpg")
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(b"\xff\xd8 a photo")
    forged = adb_bundle_with(tflite_bundle, tmp_path, device_dir="/sdcard", cleanup=True)
    assert benchmark(forged, profile, "--serial", phone.serial) == 0
    assert photo.read_bytes() == b"\xff\xd8 a photo"
    assert not any(c.startswith("rm") and "/sdcard" in c for c in phone.commands)
    one_warning(capsys, "device_dir")


def test_planted_settings_in_a_lut_are_ignored_by_validate(phones, profile, tmp_path, capsys):
    lut = tmp_path / "lut.json"
    args = ["profile", "--backend", "tflite", "--resolutions", "160", *FAST, "--out", str(lut), "--no-progress"]
    assert main(args) == 0
    document = json.loads(lut.read_text())
    victim = tmp_path / "id_rsa_backup"
    victim.write_text("keep me\n")
    photo = phones[0].fs.host_path("/sdcard/models/keep.jpg")
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(b"photo")
    document["metadata"]["backend"] = "adb"
    document["metadata"]["settings"] = {"xnnpack": True, "key_path": str(victim), "device_dir": "/sdcard"}
    lut.write_text(json.dumps(document))
    capsys.readouterr()
    args = ["validate", "--lut", str(lut), "--device", profile, "--serial", phones[0].serial, "--samples", "4"]
    args += ["--allow-target-mismatch"]  # a host table relabelled as a phone's: its target is not the phone's
    assert main([*args, "--out", str(tmp_path / "val"), "--no-save", "--no-progress", "--json"]) == 0
    assert victim.read_text() == "keep me\n" and photo.read_bytes() == b"photo"
    one_warning(capsys, "key_path", "device_dir")


def test_deploy_verify_key_refuses_an_unsigned_bundle(phones, profile, tflite_bundle, tmp_path, capsys):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    private, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True)
    requests = [p.requests for p in phones]
    args = ["deploy", str(tflite_bundle), "--device", profile, "--serial", phones[0].serial]
    assert main([*args, "--verify-key", str(public)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not signed" in err[0], err
    assert [p.requests for p in phones] == requests


# ---------------------------------------------------------------------- item 2: native code from a bundle


@pytest.fixture
def evil_library(tmp_path):
    """A shared library whose constructor creates the file named by $OFA_TEST_MARKER when it is opened."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    source = tmp_path / "evil.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "__attribute__((constructor)) static void run_on_open(void) {\n"
        '  const char *p = getenv("OFA_TEST_MARKER"); if (p) { FILE *f = fopen(p, "w"); if (f) fclose(f); }\n}\n'
    )
    library = tmp_path / "evil.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def tvm_bundle_with(library, source_bundle, directory):
    """A bundle rewritten into a TVM bundle whose library is ``library``."""
    import hashlib

    directory.mkdir()
    copy = forge(source_bundle, directory, lambda d: None)
    path = copy / "manifest.json"
    document = json.loads(path.read_text())
    (copy / document["artifact"]["main"]).unlink()
    shutil.copy(library, copy / "model.so")
    document["backend"].update(name="tvm", settings={"target": "llvm"})
    document["artifact"].update(kind="tvm-library", files=["model.so", "arch.json"], main="model.so", details={})
    document["checksums"] = {
        "model.so": hashlib.sha256((copy / "model.so").read_bytes()).hexdigest(),
        "arch.json": document["checksums"]["arch.json"],
    }
    document["manifest_sha256"] = manifest_digest(document)
    path.write_text(json.dumps(document))
    return copy


def test_tvm_library_is_not_opened_without_trust(evil_library, tflite_bundle, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tvm", reason="the tvm extra is not installed")
    marker = tmp_path / "constructor-ran"
    monkeypatch.setenv("OFA_TEST_MARKER", str(marker))
    forged = tvm_bundle_with(evil_library, tflite_bundle, tmp_path / "a")
    capsys.readouterr()
    assert main(["benchmark", str(forged), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-native-code" in err[0] and "--verify-key" in err[0], err
    assert not marker.exists()
    import ctypes

    ctypes.CDLL(str(forged / "model.so"))  # the attack is real: opening the library runs its code
    assert marker.exists()


# ---------------------------------------------------------------------- item 3: one run at a time on a phone


def holder_on(phone, stub) -> AdbBackend:
    """Another run on the phone: a backend that took the phone (the lock) and keeps it until closed."""
    backend = AdbBackend(
        TimingOptions(threads=1, warmup=1, rounds=1, runs=2),
        serial=phone.serial,
        benchmark_model=str(stub),
        retries=1,
        retry_delay_s=0.05,
    )
    backend.check()
    return backend


def lock_attempts(phone) -> int:
    return sum("@@ofa-deploy-lock" in c and "mkdir" in c for c in phone.commands)


def test_second_run_waits_for_the_first_and_neither_breaks_the_other(
    phones, profile, tflite_bundle, stub, tmp_path, capsys
):
    phone = phones[1]
    first = holder_on(phone, stub)
    forged = forge(tflite_bundle, tmp_path, lambda d: d["backend"].update(name="adb"))
    attempts = lock_attempts(phone)
    codes = []
    second = threading.Thread(target=lambda: codes.append(benchmark(forged, profile, "--serial", phone.serial)))
    second.start()
    deadline = time.monotonic() + 60
    while not codes and lock_attempts(phone) < attempts + 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the second run waits for the lock (or, without one, is done and cleaned up)
    stats = first.measure(resolution_ops(160, 1.0)[:2])  # the first run's files are all still there
    assert all(s.count == 2 for s in stats.values())
    assert not codes  # the second run is still waiting
    first.close()
    second.join(120)
    assert codes == [0]
    assert "is in use by another ofa-deploy run" in capsys.readouterr().err
    assert not phone.fs.host_path("/data/local/tmp/ofa-deploy").exists()
    assert not phone.fs.host_path("/data/local/tmp/ofa-deploy.lock").exists()


def test_second_run_past_busy_timeout_is_refused_with_exit_2(phones, tflite_bundle, stub, tmp_path, capsys):
    phone = phones[1]
    first = holder_on(phone, stub)
    impatient = write_profile(tmp_path, busy_timeout_s=0.3)
    forged = forge(tflite_bundle, tmp_path, lambda d: d["backend"].update(name="adb"))
    capsys.readouterr()
    try:
        assert benchmark(forged, impatient, "--serial", phone.serial) == 2
        err = capsys.readouterr().err.strip().splitlines()
        refusal = [line for line in err if "busy_timeout_s" in line]
        assert len(refusal) == 1 and "in use by another ofa-deploy run" in refusal[0], err
        assert f"adb -s {phone.serial} shell rm -r /data/local/tmp/ofa-deploy.lock" in refusal[0]
        assert phone.fs.host_path("/data/local/tmp/ofa-deploy/benchmark_model").is_file()  # the first's, kept
        args = ["deploy", str(forged), "--device", impatient, "--serial", phone.serial, "--no-progress", "--json"]
        assert main([*args, *FAST]) == 1  # deploy: the device's record says why (other devices go on)
        record = json.loads(capsys.readouterr().out)["devices"][0]
        assert record["status"] == "failed" and "in use by another ofa-deploy run" in record["reason"]
        assert first.measure(resolution_ops(160, 1.0)[:1])
    finally:
        first.close()
    assert benchmark(forged, impatient, "--serial", phone.serial) == 0  # free again


def test_lock_left_by_a_dead_run_is_taken_over(phones, tflite_bundle, tmp_path):
    phone = phones[1]
    lock = phone.fs.host_path("/data/local/tmp/ofa-deploy.lock")
    lock.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["true"])
    proc.wait()  # a process of this host that is gone: its lock is stale
    (lock / "owner").write_text(f"0123456789abcdef {socket.gethostname()} {proc.pid} {int(time.time())}\n")
    forged = forge(tflite_bundle, tmp_path, lambda d: d["backend"].update(name="adb"))
    bounded = write_profile(tmp_path, busy_timeout_s=10)  # a failure is a refusal, not a long wait
    assert benchmark(forged, bounded, "--serial", phone.serial) == 0
    assert not lock.exists()
