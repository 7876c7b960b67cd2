"""``--cluster``: a real local multi-node Ray cluster (ray.cluster_utils.Cluster, in this test's
process group) with two "hosts", each owning one loopback ADB device (tests/adb_device) as a
custom resource; profiling shards and deploy jobs must run on the host that owns their device."""

import json

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.fleet.cluster import device_resources, parse_device_resource
from ofa_deploy.fleet.cluster import main as cluster_main
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.ops import resolution_ops
from tests.adb_device.fixtures import loopback_profile, private_adb_env, started_phones

ray = pytest.importorskip("ray", reason="the 'farm' extra (ray) is not installed")
cluster_utils = pytest.importorskip("ray.cluster_utils")
pytestmark = pytest.mark.slow
MODEL = "loopback-fleet"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with private_adb_env(tmp_path_factory, RAY_USAGE_STATS_ENABLED="0") as mp:  # before Ray starts: workers inherit
        yield mp


@pytest.fixture(scope="module")
def phones(env, tmp_path_factory):
    with started_phones(tmp_path_factory, 2) as devices:
        yield devices


@pytest.fixture(scope="module")
def cluster(phones):
    """Head node = host 1 (owns phone 0), one more node = host 2 (owns phone 1)."""
    c = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": device_resources("adb", MODEL, [phones[0].serial]),
            # a lost host is noticed in about a second, not Ray's default 15 s (3 s x 5 missed checks)
            "_system_config": {"health_check_period_ms": 300, "health_check_failure_threshold": 3},
        },
    )
    second = c.add_node(num_cpus=1, resources=device_resources("adb", MODEL, [phones[1].serial]))
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    c.hosts = {phones[0].serial: c.head_node.node_id, phones[1].serial: second.node_id}
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def profile_yaml(phones, tmp_path_factory):
    return loopback_profile(tmp_path_factory, phones[0], {"rounds": 2, "runs": 2}, {"batch_size": 24}, width_mult=1.2)


def placements(monkeypatch):
    """Capture the Cluster objects the CLI creates, to see where each job ran."""
    from ofa_deploy.fleet import cluster as module

    made = []
    original = module.Cluster.connect.__func__

    def connect(cls, address):
        made.append(original(cls, address))
        return made[-1]

    monkeypatch.setattr(module.Cluster, "connect", classmethod(connect))
    return made


@pytest.fixture(scope="module")
def cluster_profile(cluster, profile_yaml, tmp_path_factory):
    """r=160 profiled through --cluster: (table path, its --json summary, where each shard ran)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("cluster-lut") / "cluster.json"
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        made = placements(mp)
        args = ["profile", "--device", str(profile_yaml), "--cluster", cluster.address, "--out", str(out)]
        assert main([*args, "--resolutions", "160", "--no-progress", "--json"]) == 0
    return out, json.loads(buffer.getvalue()), dict(made[-1].placements)


def test_sharded_profile_runs_each_shard_on_its_devices_host(cluster, phones, cluster_profile):
    out, summary, where = cluster_profile
    assert sorted(summary["devices"]) == sorted(d.serial for d in phones)  # found from the hosts' resources
    assert where == cluster.hosts  # each shard ran on the node that owns its device
    table = load_lut(out)
    assert set(table.tables[160]) == {op.key for op in resolution_ops(160, 1.2)}
    assert {e["device"] for k, e in table.tables[160].items() if "devices" not in e} == set(cluster.hosts)


def test_validate_through_the_cluster(cluster, phones, profile_yaml, cluster_profile, tmp_path, capsys):
    lut = cluster_profile[0]
    before = [len(d.benchmark.runner.runs) for d in phones]
    with pytest.MonkeyPatch.context() as mp:
        made = placements(mp)
        args = ["validate", "--lut", str(lut), "--device", str(profile_yaml), "--cluster", cluster.address]
        assert (
            main([*args, "--samples", "6", "--out", str(tmp_path / "v"), "--no-save", "--no-progress", "--json"]) == 0
        )
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 6 and report["normalised_by_reference"]
    assert made[-1].placements == cluster.hosts  # batches went to the hosts owning the devices
    assert all(len(d.benchmark.runner.runs) > b for d, b in zip(phones, before))


def test_deploy_through_the_cluster(cluster, phones, profile_yaml, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}))
    bundle = tmp_path / "bundle"
    assert (
        main(["compile", "--arch", str(arch), "--backend", "tflite", "--width-mult", "1.2", "--out", str(bundle)]) == 0
    )
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        made = placements(mp)
        args = ["deploy", str(bundle), "--device", str(profile_yaml), "--cluster", cluster.address, "--json"]
        assert main([*args, "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["device"]: r["status"] for r in doc["devices"]} == {d.serial: "deployed" for d in phones}
    assert all(r["verified_on_device"] for r in doc["devices"])
    assert made[-1].placements == cluster.hosts
    assert (bundle / "deployments").is_dir() and len(list((bundle / "deployments").iterdir())) == 2
    for phone in phones:  # installed on each phone
        assert phone.fs.host_path("/data/local/tmp/ofa-deploy-installed/bundle/model.tflite").is_file()


def test_unknown_device_on_cluster_is_exit_3(cluster, profile_yaml, tmp_path, capsys):
    out = tmp_path / "x.json"
    args = ["profile", "--device", str(profile_yaml), "--cluster", cluster.address, "--out", str(out)]
    assert main([*args, "--serial", "127.0.0.1:1", "--serial", "127.0.0.1:2", "--no-progress"]) == 3
    assert "advertises adb device 127.0.0.1:1" in capsys.readouterr().err


def test_resources_helper(capsys):
    assert cluster_main(["resources", "--backend", "adb", "--model", "pixel2", "--serial", "10.0.0.5:5555"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"ofa-device:adb:pixel2:10.0.0.5:5555": 1.0, "ofa-model:adb:pixel2": 1.0}
    assert parse_device_resource("ofa-device:adb:pixel2:10.0.0.5:5555") == ("adb", "pixel2", "10.0.0.5:5555")
    assert cluster_main(["resources", "--backend", "adb", "--model", "a:b", "--serial", "x"]) == 2


def test_shard_is_retried_on_a_new_host_after_its_host_is_lost(cluster, phones, profile_yaml, tmp_path):
    """Host 2 dies mid-shard; a replacement host with the same device joins; Ray reruns the job
    there and the shard resumes from what was saved (the run still exits 0 with every key)."""
    import threading
    import time

    out = tmp_path / "retried.json"
    args = ["profile", "--device", str(profile_yaml), "--cluster", cluster.address, "--out", str(out)]
    result = {}
    with pytest.MonkeyPatch.context() as mp:
        made = placements(mp)
        runner = threading.Thread(
            target=lambda: result.update(code=main([*args, "--resolutions", "160", "--no-progress"]))
        )
        before = len(phones[1].benchmark.runner.runs)
        runner.start()
        deadline = time.monotonic() + 120
        while len(phones[1].benchmark.runner.runs) < before + 30 and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.05)
        lost = next(n for n in cluster.worker_nodes if n.node_id == cluster.hosts[phones[1].serial])
        cluster.remove_node(lost, allow_graceful=False)
        replacement = cluster.add_node(num_cpus=1, resources=device_resources("adb", MODEL, [phones[1].serial]))
        cluster.hosts[phones[1].serial] = replacement.node_id
        runner.join(timeout=240)
    assert result.get("code") == 0
    assert made[-1].placements[phones[1].serial] == replacement.node_id  # the rerun ran on the new host
    assert set(load_lut(out).tables[160]) == {op.key for op in resolution_ops(160, 1.2)}
