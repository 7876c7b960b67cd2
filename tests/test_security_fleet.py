"""Issue 23, items 6 and 8: a Ray cluster's hosts are not trusted by the driver, their jobs keep their
files private and apart; Ctrl-C during ``deploy`` records what finished and exits 130 at once.

Loopback ADB phones (tests/adb_device) stand in for devices; the cluster tests start a real
one-node Ray cluster (ray.cluster_utils) whose single host owns both phones."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa_deploy.cli.main import main
from ofa_deploy.fleet.records import DeploymentRecord, read_record, record_path
from tests.adb_device.fixtures import loopback_profile, private_adb_env, started_phones

ARCH = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}
FAST = ["--rounds", "2", "--runs", "3", "--no-progress", "--tolerance", "1e9"]
MODEL = "loopback-fleet"


@pytest.fixture(scope="module")
def scratch():
    """A short private temp dir for this module's TMPDIR (Ray puts its sockets under it)."""
    path = tempfile.mkdtemp(prefix="ofa-sec-")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def phones(tmp_path_factory, scratch):
    """Two loopback phones; a private ADB key, and TMPDIR set before Ray starts (its workers inherit it)."""
    variables = {"TMPDIR": str(scratch), "RAY_USAGE_STATS_ENABLED": "0"}
    with private_adb_env(tmp_path_factory, **variables), started_phones(tmp_path_factory, 2) as devices:
        yield devices


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A .tflite bundle with random weights, compiled once; each test deploys a copy of it."""
    where = tmp_path_factory.mktemp("compiled")
    (where / "arch.json").write_text(json.dumps(ARCH))
    args = ["--arch", str(where / "arch.json"), "--backend", "tflite", "--width-mult", "1.2"]
    assert main(["compile", *args, "--out", str(where / "sec-160")]) == 0
    return where / "sec-160"


@pytest.fixture
def bundle(compiled, tmp_path):
    """A fresh copy of the bundle (its own deployments/ records) for each test."""
    return Path(shutil.copytree(compiled, tmp_path / compiled.name))


@pytest.fixture(scope="module")
def profile_yaml(phones, tmp_path_factory):
    return loopback_profile(tmp_path_factory, phones[0], {"rounds": 2, "runs": 3}, width_mult=1.2)


def serials(devices):
    return [a for d in devices for a in ("--serial", d.serial)]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
VALID = DeploymentRecord("d", "deployed", "t", "b", measured_ms=1.0, remote_sha256={"m": "ab"}).to_dict()
FUZZ = settings(max_examples=1000 if os.environ.get("OFA_DEPLOY_FUZZ") == "1" else 60, deadline=None, database=None)


def test_record_fields_are_all_checked():
    from ofa_deploy.fleet import records

    assert set(records._FIELD_CHECKS) == set(DeploymentRecord.__dataclass_fields__)
    with pytest.raises(ValueError, match="measured_ms"):
        DeploymentRecord.from_dict({**VALID, "measured_ms": "1"})


@FUZZ
@given(field=st.sampled_from(sorted(VALID)), value=JSON, junk=JSON)
def test_record_validator_fuzz(field, value, junk):
    """A record read back or sent by a host: a valid record or ValueError, nothing else."""
    for doc in ({**VALID, field: value}, junk):
        try:
            record = DeploymentRecord.from_dict(doc)
        except ValueError:
            continue
        assert json.loads(json.dumps(record.to_dict(), allow_nan=False)) == record.to_dict()


@FUZZ
@given(doc=JSON, raw=st.binary(max_size=64), items=JSON)
def test_reply_decoder_fuzz(doc, raw, items):
    """A host's answer: (result, node) or one OFADeployError, whatever the bytes."""
    from ofa_deploy.errors import OFADeployError
    from ofa_deploy.fleet.replies import decode, stats_from_plain

    for reply in (raw, json.dumps(doc).encode(), json.dumps({"ok": doc, "node": "n"}).encode(), doc):
        try:
            result, node = decode("dev", reply)
        except OFADeployError:
            continue
        assert isinstance(result, dict) and isinstance(node, str)
    good = dict.fromkeys(("count", "mean", "std", "median", "min", "p90", "p99", "estimate"), 1.0)
    good |= {"raw_estimate": 1.0, "round_spread": 0.0, "reference_ms": None}
    assert len(stats_from_plain("dev", [good], 1)) == 1
    for timings in (items, [{**good, "count": items}]):
        with contextlib.suppress(OFADeployError):
            assert len(stats_from_plain("dev", timings, 1)) == 1


# ------------------------------------------------------------------------- item 8: Ctrl-C


# The CLI as started from a shell: SIGINT neither ignored nor blocked. A pytest-xdist worker that ran Ray or
# TVM before may pass on a signal mask or disposition in which the child never sees Ctrl-C at all (the run
# then waited out the test's 30 s: the child's main thread sat in its loop, no KeyboardInterrupt raised).
AS_FROM_A_TERMINAL = [
    sys.executable,
    "-X",
    "faulthandler",  # a hang is shown thread by thread (below)
    "-c",
    "import signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from ofa_deploy.cli.main import main; sys.exit(main(sys.argv[1:]))",
]


@pytest.mark.slow
def test_ctrl_c_records_finished_devices_and_exits_130_quickly(bundle, profile_yaml, phones):
    """One phone answers at once, the other hangs in its benchmark: SIGINT once the first is
    recorded must end the run with 130 within seconds, keeping the finished device's record."""
    fast, slow = phones
    gate, reached = threading.Event(), threading.Event()
    original = slow.benchmark.runner.run

    def held(argv, cwd="."):
        reached.set()
        gate.wait(120)
        return original(argv, cwd)

    slow.benchmark.runner.run = held
    command = [*AS_FROM_A_TERMINAL, "deploy", str(bundle), "--device", str(profile_yaml)]
    proc = subprocess.Popen(
        [*command, *serials(phones), *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if reached.is_set() and read_record(bundle, fast.serial) is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert read_record(bundle, fast.serial) is not None and reached.is_set()
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # show where it hangs: faulthandler prints every thread on SIGABRT
            signals = [line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if "Sig" in line]
            proc.send_signal(signal.SIGABRT)
            threads = proc.communicate(timeout=30)[1]
            pytest.fail(f"deploy still running 30 s after Ctrl-C; its signals {signals}; its threads:\n{threads}")
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        gate.set()
        slow.benchmark.runner.run = original
    assert proc.returncode == 130, err
    assert waited < 15, waited  # not the command timeout
    assert read_record(bundle, fast.serial).status == "deployed"
    assert not record_path(bundle, slow.serial).exists()  # nothing claimed for the unfinished one
    assert f"interrupted: 1 of 2 device(s) finished (records in {bundle / 'deployments'}/)" in err
    assert f"stopped waiting for {slow.serial}" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------- item 6: --cluster


def test_cluster_local_says_it_starts_a_new_cluster(bundle, profile_yaml, phones, monkeypatch, capsys):
    ray = pytest.importorskip("ray", reason="the 'farm' extra (ray) is not installed")
    started = []

    def init(address=None, **kwargs):
        started.append(address)
        raise ConnectionError("not started in this test")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    args = ["deploy", str(bundle), "--device", str(profile_yaml), "--serial", phones[0].serial, "--cluster", "local"]
    assert main([*args, *FAST]) == 3
    err = capsys.readouterr().err
    assert started == ["local"]
    lines = [line for line in err.splitlines() if "new single-node Ray cluster" in line]
    assert len(lines) == 1 and lines[0].startswith("--cluster local: starting a new")


@pytest.fixture(scope="module")
def one_host(phones):
    """A Ray cluster of one host that owns both phones (two jobs run side by side on it)."""
    ray = pytest.importorskip("ray", reason="the 'farm' extra (ray) is not installed")
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    from ofa_deploy.fleet.cluster import device_resources

    resources = device_resources("adb", MODEL, [p.serial for p in phones])
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": resources})
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def job_root(scratch: Path) -> Path:
    return scratch / f"ofa-deploy-cluster-{os.getuid()}"


def cluster_deploy(bundle, profile_yaml, one_host, capsys):
    args = ["deploy", str(bundle), "--device", str(profile_yaml), "--cluster", one_host.address, "--json"]
    code = main([*args, *FAST])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_cluster_jobs_on_one_host_use_private_directories(bundle, profile_yaml, phones, one_host, scratch, capsys):
    code, doc = cluster_deploy(bundle, profile_yaml, one_host, capsys)
    assert code == 0, doc
    assert {r["device"]: r["status"] for r in doc["devices"]} == {p.serial: "deployed" for p in phones}
    root = job_root(scratch)
    assert root.is_dir() and (root.stat().st_mode & 0o777) == 0o700 and root.stat().st_uid == os.getuid()
    assert list(root.iterdir()) == []  # each job's own copy is gone
    assert not (scratch / "ofa-deploy-cluster").exists()  # no directory shared between jobs or users
    for phone in phones:
        copy = phone.fs.host_path(f"/data/local/tmp/ofa-deploy-installed/{bundle.name}/model.tflite")
        assert copy.read_bytes() == (bundle / "model.tflite").read_bytes()

    # a job directory root that others may write into is refused before anything is pushed
    pushed = [len(p.pushed) for p in phones]
    root.chmod(0o777)
    try:
        code, doc = cluster_deploy(bundle, profile_yaml, one_host, capsys)
    finally:
        root.chmod(0o700)
    assert code == 1
    for record in doc["devices"]:
        assert record["status"] == "failed" and "is not a private directory of this user" in record["reason"]
    assert [len(p.pushed) for p in phones] == pushed


@pytest.mark.slow
def test_cluster_host_replies_are_checked_not_trusted(bundle, profile_yaml, phones, one_host, monkeypatch, capsys):
    """A host that answers with a pickled object, or with a record for another device, gets its
    device a `failed` record; nothing it sent is written."""
    from ofa_deploy.fleet import cluster

    victim, liar = phones[0].serial, phones[1].serial

    def forged(device, spec, files, bundle_files, options, previous):
        if device == victim:  # an arbitrary object instead of JSON bytes
            return {"record": {"device": device, "status": "deployed"}}
        record = {"device": victim, "status": "deployed", "time": "now", "bundle": bundle_files.name}
        return json.dumps({"ok": {"record": record}, "node": "forged"}).encode()

    monkeypatch.setattr(cluster, "_run_deploy", forged)
    code, doc = cluster_deploy(bundle, profile_yaml, one_host, capsys)
    assert code == 1
    got = {r["device"]: r for r in doc["devices"]}
    assert "a dict instead of JSON bytes" in got[victim]["reason"]
    assert f"a record for {victim!r}" in got[liar]["reason"]
    for serial in (victim, liar):
        assert got[serial]["status"] == "failed" and "its host sent an invalid reply" in got[serial]["reason"]
        assert read_record(bundle, serial).status == "failed"
