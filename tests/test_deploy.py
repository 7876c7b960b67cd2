"""``ofa-deploy deploy`` against several loopback ADB devices at once (tests/adb_device: the real ADB
wire protocol on 127.0.0.1, shell commands run by /bin/sh in a temporary root, models timed with
ai-edge-litert). No physical phone is involved."""

import json
import re
import shutil
import socket
import threading

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.errors import OFADeployError
from ofa_deploy.fleet.deploy import judge
from ofa_deploy.fleet.records import DeploymentRecord, device_file_name, read_record, write_record
from tests.adb_device.fixtures import loopback_profile, private_adb_env, started_phones

ARCH = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}
FAST = ["--rounds", "2", "--runs", "3", "--no-progress"]
LOOSE = ["--tolerance", "1e9"]  # the prediction is a Note10's, the loopback device is this host


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with private_adb_env(tmp_path_factory) as mp:
        yield mp


@pytest.fixture(scope="module")
def phones(env, tmp_path_factory):
    with started_phones(tmp_path_factory, 3) as devices:
        yield devices


@pytest.fixture(scope="module")
def profile_yaml(phones, tmp_path_factory):
    return loopback_profile(tmp_path_factory, phones[0], {"rounds": 2, "runs": 3}, width_mult=1.2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, reference_dir):
    """A .tflite bundle (random weights) whose manifest predicts with the official Note10 table."""
    arch = tmp_path_factory.mktemp("arch") / "arch.json"
    arch.write_text(json.dumps(ARCH))
    out = tmp_path_factory.mktemp("bundles") / "small-160"
    args = ["compile", "--arch", str(arch), "--backend", "tflite", "--width-mult", "1.2", "--out", str(out)]
    assert main([*args, "--lut", str(reference_dir / "note10" / "160_lookup_table.yaml")]) == 0
    return out


def deploy(bundle, profile_yaml, devices, *extra):
    serials = [a for d in devices for a in ("--serial", d.serial)]
    return main(["deploy", str(bundle), "--device", str(profile_yaml), *serials, *FAST, *extra])


def installed(device, remote_dir, bundle, name="model.tflite"):
    return device.fs.host_path(f"{remote_dir}/{bundle.name}/{name}")


def bundle_pushes(device):
    return [p for p in device.pushed if "ofa-deploy-installed" in p]


def run_json(capsys, *args):
    code = deploy(*args, "--json")
    return code, json.loads(capsys.readouterr().out)


def all_benchmarking_at_once(phones, monkeypatch, timeout_s: float = 60.0) -> threading.Barrier:
    """Each phone's first benchmark run waits until every phone is in its first run: a deploy that
    reached the devices one after another breaks the barrier (its runs then fail), whatever the load."""
    barrier = threading.Barrier(len(phones), timeout=timeout_s)
    for phone in phones:
        runner, first = phone.benchmark.runner, threading.Event()

        def run(argv, cwd=".", _run=runner.run, _first=first):
            if not _first.is_set():
                _first.set()
                barrier.wait()
            return _run(argv, cwd)

        monkeypatch.setattr(runner, "run", run)
    return barrier


def test_deploys_to_three_devices_in_parallel_with_checksums_and_records(
    bundle, profile_yaml, phones, capsys, monkeypatch
):
    barrier = all_benchmarking_at_once(phones, monkeypatch)
    code, doc = run_json(capsys, bundle, profile_yaml, phones, *LOOSE)
    assert not barrier.broken, "the devices were not measured at the same time"
    assert code == 0 and doc["exit_code"] == 0
    expected = json.loads((bundle / "manifest.json").read_text())["checksums"]["model.tflite"]
    for device, rec in zip(phones, doc["devices"]):
        assert rec["device"] == device.serial and rec["status"] == "deployed", rec
        assert rec["verified_on_device"] and rec["remote_sha256"]["model.tflite"] == expected
        assert rec["identity"]["model"] == "Pixel 2 (loopback)" and rec["measured_ms"] > 0
        assert rec["predicted_ms"] > 0 and rec["passed"] is True
        on_device = installed(device, "/data/local/tmp/ofa-deploy-installed", bundle)
        assert on_device.read_bytes() == (bundle / "model.tflite").read_bytes()
        assert any("sha256sum" in c for c in device.commands)  # hashed by the device, not by us
        saved = read_record(bundle, device.serial)
        assert saved is not None and saved.status == "deployed" and saved.measured_ms == rec["measured_ms"]
        assert (bundle / "deployments" / f"{device_file_name(device.serial)}.json").is_file()


def test_second_run_skips_devices_holding_the_same_hash_unless_forced(bundle, profile_yaml, phones, capsys):
    assert deploy(bundle, profile_yaml, phones, *LOOSE) in (0,)  # ensure deployed (the test may run alone)
    capsys.readouterr()
    pushed = [len(bundle_pushes(d)) for d in phones]
    code, doc = run_json(capsys, bundle, profile_yaml, phones, *LOOSE)
    assert code == 0 and {r["status"] for r in doc["devices"]} == {"skipped"}
    assert [len(bundle_pushes(d)) for d in phones] == pushed  # the bundle was not pushed again
    code, doc = run_json(capsys, bundle, profile_yaml, phones[:1], *LOOSE, "--force")
    assert code == 0 and doc["devices"][0]["status"] == "deployed"
    assert len(bundle_pushes(phones[0])) == pushed[0] + 3  # model, arch.json, manifest.json


def test_dry_run_changes_nothing(bundle, profile_yaml, phones, capsys):
    before = {d.serial: (bundle / "deployments" / f"{device_file_name(d.serial)}.json") for d in phones}
    stamps = {s: p.read_text() if p.exists() else None for s, p in before.items()}
    code, doc = run_json(capsys, bundle, profile_yaml, phones, "--remote-dir", "/data/local/tmp/dry", "--dry-run")
    assert code == 0 and {r["status"] for r in doc["devices"]} == {"would-install"}
    assert not any("/dry/" in p for d in phones for p in d.pushed)
    assert not installed(phones[0], "/data/local/tmp/dry", bundle).exists()
    assert {s: p.read_text() if p.exists() else None for s, p in before.items()} == stamps


def test_device_dropped_mid_push_exit_3_others_complete_rerun_completes(bundle, profile_yaml, phones, capsys, caplog):
    remote = ["--remote-dir", "/data/local/tmp/drop-test"]
    lost = phones[1]
    lost.drop_during_upload("model.tflite")  # the cable is pulled while the model is being pushed
    try:
        code, doc = run_json(capsys, bundle, profile_yaml, phones, *LOOSE, *remote)
    finally:
        lost.back_online()
    assert code == 3 and doc["exit_code"] == 3
    status = {r["device"]: r for r in doc["devices"]}
    assert status[phones[0].serial]["status"] == status[phones[2].serial]["status"] == "deployed"
    dropped = status[lost.serial]
    assert dropped["status"] == "unreachable" and "stopped answering" in dropped["reason"]
    assert not dropped["verified_on_device"]
    assert read_record(bundle, lost.serial).status == "unreachable"  # the record says why
    assert f"{lost.serial}: unreachable: adb device {lost.serial} stopped answering" in caplog.text
    code, doc = run_json(capsys, bundle, profile_yaml, phones, *LOOSE, *remote)  # rerun completes it
    assert code == 0
    assert [r["status"] for r in doc["devices"]] == ["skipped", "deployed", "skipped"]
    assert installed(lost, "/data/local/tmp/drop-test", bundle).read_bytes() == (bundle / "model.tflite").read_bytes()


def test_corrupted_copy_on_one_device_is_caught(bundle, profile_yaml, phones, capsys):
    bad = phones[2]
    bad.corrupt_uploads("model.tflite")
    try:
        code, doc = run_json(capsys, bundle, profile_yaml, phones, *LOOSE, "--remote-dir", "/data/local/tmp/corrupt")
    finally:
        bad.corrupt_uploads(None)
    assert code == 1
    statuses = [r["status"] for r in doc["devices"]]
    assert statuses == ["deployed", "deployed", "hash-mismatch"]
    rec = doc["devices"][2]
    assert not rec["verified_on_device"] and rec["measured_ms"] is None and "corrupt" in rec["reason"]


def test_latency_off_the_prediction_fails_the_tolerance(bundle, profile_yaml, phones, capsys):
    code, doc = run_json(capsys, bundle, profile_yaml, phones[:1], "--tolerance", "1e-9", "--force")
    rec = doc["devices"][0]
    assert code == 1 and rec["status"] == "out-of-tolerance" and rec["passed"] is False
    assert rec["verified_on_device"] and "beyond the tolerance" in rec["reason"]
    # the figure in the reason is the one the tolerance bounds: the distance from the prediction, relative to it
    off = float(re.search(r"([\d.]+)% off the prediction", rec["reason"]).group(1))
    assert off == pytest.approx(100 * abs(rec["measured_ms"] - rec["predicted_ms"]) / rec["predicted_ms"], abs=0.051)


def test_judge():
    assert judge(10.0, 11.0, 0.2) == (True, pytest.approx(10.0))
    assert judge(10.0, 5.0, 0.2)[0] is False
    assert judge(10.0, None, 0.2) == (None, None)


def test_a_record_holding_a_non_finite_number_is_not_written(tmp_path):
    """Records are strict JSON (read back, they refuse NaN): a record that would hold one is an
    internal error, and the device's previous record stays."""
    write_record(tmp_path, DeploymentRecord("d", "deployed", "t", "b", measured_ms=2.0))
    with pytest.raises(OFADeployError, match="non-finite"):
        write_record(tmp_path, DeploymentRecord("d", "deployed", "t", "b", measured_ms=float("nan")))
    assert read_record(tmp_path, "d").measured_ms == 2.0


def test_unreachable_device_is_exit_3(bundle, profile_yaml, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    code = main(["deploy", str(bundle), "--device", str(profile_yaml), "--serial", f"127.0.0.1:{port}", *FAST])
    assert code == 3
    assert "unreachable: cannot connect" in capsys.readouterr().err


def test_tampered_bundle_is_exit_2_before_any_device(bundle, profile_yaml, phones, tmp_path, capsys):
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("deployments"))
    data = bytearray((copy / "model.tflite").read_bytes())
    data[100] ^= 1
    (copy / "model.tflite").write_bytes(data)
    requests = [d.requests for d in phones]
    assert deploy(copy, profile_yaml, phones) == 2
    assert "does not match its sha256" in capsys.readouterr().err
    assert [d.requests for d in phones] == requests


def test_bad_targets(bundle, profile_yaml, phones, capsys):
    assert main(["deploy", str(bundle), "--backend", "tflite"]) == 2  # a local runtime: nothing to deploy to
    assert "not a remote device" in capsys.readouterr().err
    dup = ["--serial", phones[0].serial] * 2
    assert main(["deploy", str(bundle), "--device", str(profile_yaml), *dup]) == 2
    assert "named twice" in capsys.readouterr().err
    host, port = phones[0].serial.rsplit(":", 1)
    alias = ["--serial", phones[0].serial, "--serial", f"{host}_{port}"]  # two ids, one record file
    assert main(["deploy", str(bundle), "--device", str(profile_yaml), *alias]) == 2
    assert "would share one file" in capsys.readouterr().err
    assert main(["benchmark", str(bundle), "--backend", "adb", "--serial", "a:1", "--serial", "b:2"]) == 2
    assert "uses one target" in capsys.readouterr().err
    assert main(["deploy", str(bundle), "--device", str(profile_yaml), "--tolerance", "0"]) == 2


@pytest.fixture(scope="module")
def pixel7_bundle(tmp_path_factory, reference_dir):
    """A bundle whose prediction comes from a table of another phone (a Pixel 7, fitted from
    measurements that say so), compiled with --allow-target-mismatch since it is a tflite bundle."""
    from ofa_deploy.latency.table import load_lut
    from ofa_deploy.latency.validation import sample_archs

    where = tmp_path_factory.mktemp("pixel7")
    note10 = str(reference_dir / "note10" / "160_lookup_table.yaml")
    table = load_lut(note10, 1.2)
    target = {"backend": "adb", "device": "pixel7", "runtime": "TFLite benchmark_model over adb-shell"}
    target |= {"threads": 1, "identity": {"manufacturer": "Google", "model": "Pixel 7"}}
    lines = [{**a.to_dict(), "latency_ms": table.predict(a), "target": target} for a in sample_archs(table, 24, 0)]
    (where / "pixel7.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    lut = where / "pixel7.json"
    fit = ["fit", "--measurements", str(where / "pixel7.jsonl"), "--lut", note10, "--width-mult", "1.2"]
    assert main([*fit, "--no-progress", "--out", str(lut)]) == 0
    (where / "arch.json").write_text(json.dumps(ARCH))
    out = where / "pixel7-160"
    args = ["compile", "--arch", str(where / "arch.json"), "--backend", "tflite", "--width-mult", "1.2"]
    assert main([*args, "--lut", str(lut), "--allow-target-mismatch", "--out", str(out)]) == 0
    return out


def test_a_device_of_another_target_than_the_prediction_is_refused_unless_allowed(
    pixel7_bundle, profile_yaml, phones, capsys
):
    """The loopback phone (a 'Pixel 2 (loopback)') is not the Pixel 7 the prediction was made on:
    target-mismatch, exit 2, nothing installed; allowed, it deploys and the record says how it differs."""
    code, doc = run_json(capsys, pixel7_bundle, profile_yaml, phones[:1], *LOOSE)
    [record] = doc["devices"]
    assert code == 2 and record["status"] == "target-mismatch" and record["remote_sha256"] == {}
    assert "model Pixel 7 vs Pixel 2 (loopback)" in record["reason"] and "--allow-target-mismatch" in record["reason"]
    assert not installed(phones[0], "/data/local/tmp/ofa-deploy-installed", pixel7_bundle).exists()

    code, doc = run_json(capsys, pixel7_bundle, profile_yaml, phones[:1], *LOOSE, "--allow-target-mismatch")
    [record] = doc["devices"]
    assert code == 0 and record["status"] == "deployed"
    assert "model Pixel 7 vs Pixel 2 (loopback)" in record["target_mismatch_allowed"]


def test_an_int8_bundle_deploys_and_benchmarks_on_the_phones_as_int8(profile_yaml, phones, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    bundle = tmp_path / "int8-160"
    args = ["compile", "--arch", str(arch), "--backend", "tflite", "--width-mult", "1.2", "--precision", "int8"]
    assert main([*args, "--out", str(bundle)]) == 0
    capsys.readouterr()
    code, doc = run_json(capsys, bundle, profile_yaml, phones[:1], *LOOSE)
    record = doc["devices"][0]
    assert code == 0 and record["status"] == "deployed" and record["verified_on_device"], record
    assert record["measured_ms"] > 0
    on_device = installed(phones[0], "/data/local/tmp/ofa-deploy-installed", bundle)
    assert on_device.read_bytes() == (bundle / "model.tflite").read_bytes()  # the int8 file itself ran there
    # the target was configured for the bundle's precision; a --precision that contradicts it is refused
    assert deploy(bundle, profile_yaml, phones[:1], *LOOSE, "--precision", "fp32") == 2
    assert "was compiled for int8, not fp32" in capsys.readouterr().err
