"""``profile --serial S1 --serial S2 ...``: one table measured in shards over several loopback ADB
devices (tests/adb_device), merged, compared across devices, resumed per device; and the
sharding/merging logic on its own."""

import contextlib
import io
import json

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError, TargetUnavailableError
from ofa_deploy.fleet.sharding import anchor_keys, disagreeing_devices, merge_shards, shard_dir, split_plan
from ofa_deploy.latency.metadata import TableMetadata
from ofa_deploy.latency.profiling import ProfilePlan
from ofa_deploy.latency.table import LatencyTable, load_lut
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import resolution_ops
from tests.adb_device.fixtures import loopback_profile, private_adb_env, started_phones

FAST = ["--resolutions", "160", "--rounds", "2", "--runs", "2", "--no-progress"]


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
    return loopback_profile(tmp_path_factory, phones[0], {"rounds": 2, "runs": 2}, {"batch_size": 16})


def serials(devices):
    return [a for d in devices for a in ("--serial", d.serial)]


@pytest.fixture(scope="module")
def pair_lut(profile_yaml, phones, tmp_path_factory):
    """r=160 profiled over the first two devices: (table path, --json summary, runs each device did)."""
    out = tmp_path_factory.mktemp("pair") / "fleet.json"
    pair = phones[:2]
    runs = [len(d.benchmark.runner.runs) for d in pair]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        args = ["profile", "--device", str(profile_yaml), *serials(pair), "--out", str(out), *FAST, "--json"]
        assert main(args) == 0
    return out, json.loads(buffer.getvalue()), [len(d.benchmark.runner.runs) - r for d, r in zip(pair, runs)]


@pytest.mark.slow
def test_profile_sharded_over_two_devices_holds_every_key(pair_lut, phones):
    out, summary, runs = pair_lut
    pair = phones[:2]
    assert summary["devices"] == [d.serial for d in pair] and summary["keys"] == 96
    table = load_lut(out)
    expected = {op.key for op in resolution_ops(160, 1.0)}  # what a single-device profile measures
    assert set(table.tables[160]) == expected
    table.check_complete()
    assert table.predict(smallest_arch(160), 1.0) > 0
    fleet = table.metadata.fleet
    assert [d["device"] for d in fleet["devices"]] == [d.serial for d in pair]
    assert len(fleet["anchors"]) == 4 and fleet["max_device_spread"] >= 1.0
    for key, entry in table.tables[160].items():
        if key in fleet["anchors"]:
            assert set(entry["devices"]) == {d.serial for d in pair} and entry["device_spread"] >= 1.0
        else:
            assert entry["device"] in {d.serial for d in pair}
    by_device = [sum(1 for e in table.tables[160].values() if e["device"] == d.serial) for d in pair]
    assert by_device == [46, 46]  # (96 - 4 anchors) dealt evenly
    # both devices really measured their share (each benchmark_model run is logged by the device)
    assert all(n >= 50 for n in runs)
    assert all(p.is_file() for p in shard_dir(out).iterdir())  # the per-device shards are kept


@pytest.mark.slow
def test_lost_device_resumes_and_slow_device_is_reported(profile_yaml, phones, tmp_path, capsys, caplog):
    out = tmp_path / "fleet3.json"
    args = ["profile", "--device", str(profile_yaml), *serials(phones), "--out", str(out), *FAST]
    for phone in phones:  # identical phones report identical times, whatever else this host is doing
        phone.benchmark.runner.simulated = True
    phones[2].benchmark.runner.slowdown = 2.5  # a throttled unit among identical phones
    phones[1].drop_after(12, offline=True)  # a cable pulled a few batches in
    try:
        assert main(args) == 3
        err = capsys.readouterr().err
        assert "1 of 3 device(s) failed" in err and "--resume" in err and phones[1].serial in err
        assert not out.exists()  # no merged table before every shard is complete
        complete = load_lut(shard_dir(out) / f"127.0.0.1_{phones[0].port}.json")
        assert len(complete.tables[160]) == 31 + 4  # its third of the 92 keys, and the 4 anchors
        runs_first = len(phones[0].benchmark.runner.runs)
        phones[1].back_online()
        caplog.clear()
        assert main([*args, "--resume"]) == 0
        assert len(phones[0].benchmark.runner.runs) == runs_first  # the finished shard was not measured again
    finally:
        phones[2].benchmark.runner.slowdown = 1.0
        phones[1].back_online()
        for phone in phones:
            phone.benchmark.runner.simulated = False
    table = load_lut(out)
    assert set(table.tables[160]) == {op.key for op in resolution_ops(160, 1.0)}
    outliers = table.metadata.fleet["disagreeing"]
    assert list(outliers) == [phones[2].serial] and outliers[phones[2].serial]["ratio"] > 1.5
    assert f"device {phones[2].serial} disagrees" in caplog.text
    anchor = table.tables[160][table.metadata.fleet["anchors"][0]]
    assert phones[2].serial not in anchor["device"]  # left out of the shared value, still listed
    assert set(anchor["devices"]) == {d.serial for d in phones}


# ---------------------------------------------------------------------- the logic alone


def _shard_table(plan, values, spread=0.02):
    entries = {k: {"count": 4, "mean": v, "std": 0.0, "estimate": v, "round_spread": spread} for k, v in values.items()}
    meta = TableMetadata.new(device="x", backend="adb", value_field="estimate", width_mult=plan.width_mult)
    return LatencyTable(tables={160: entries}, metadata=meta, source="shard")


def test_split_covers_every_key_once_plus_shared_anchors(tmp_path):
    plan = ProfilePlan.for_space(1.0, (160,))
    shards = split_plan(plan, ["a", "b", "c"], tmp_path / "t.json")
    anchors = set(anchor_keys(plan))
    seen = [k for s in shards for k in s.plan.ops if k not in anchors]
    assert sorted(seen) == sorted(set(plan.ops) - anchors) and len(seen) == len(set(seen))
    assert all(anchors <= set(s.plan.ops) for s in shards)
    assert split_plan(plan, ["a"], tmp_path / "t.json")[0].plan.ops.keys() == plan.ops.keys()
    with pytest.raises(BadInputError, match="named twice"):
        split_plan(plan, ["a", "a"], tmp_path / "t.json")
    with pytest.raises(BadInputError, match="'10.0.0.1:5555' and '10.0.0.1_5555' would share one file"):
        split_plan(plan, ["10.0.0.1:5555", "10.0.0.1_5555"], tmp_path / "t.json")  # one shard file for both


def test_merge_flags_only_the_device_beyond_noise(tmp_path):
    plan = ProfilePlan.for_space(1.0, (160,))
    shards = split_plan(plan, ["a", "b", "c"], tmp_path / "t.json")
    factor = {"a": 1.0, "b": 1.05, "c": 1.6}  # b within noise, c off
    tables = {s.device: _shard_table(plan, {k: 1.0 * factor[s.device] for k in s.plan.ops}) for s in shards}
    merged = merge_shards(plan, tables, tmp_path / "t.json")
    assert list(merged.metadata.fleet["disagreeing"]) == ["c"]
    anchor = merged.tables[160][anchor_keys(plan)[0]]
    assert anchor["estimate"] == pytest.approx(1.025) and anchor["device_spread"] == pytest.approx(1.6)
    with pytest.raises(Exception, match="lack"):
        merge_shards(plan, {"a": tables["a"]}, tmp_path / "t.json")


def test_noise_grows_with_the_measured_spread():
    anchors = {
        f"k{i}": {"a": {"estimate": 1.0, "round_spread": 0.1}, "b": {"estimate": 1.25, "round_spread": 0.1}}
        for i in range(4)
    }
    assert disagreeing_devices(anchors, "estimate") == {}  # 25% is within 3 x 10% round spread
    for per in anchors.values():
        for rec in per.values():
            rec["round_spread"] = 0.01
    assert set(disagreeing_devices(anchors, "estimate")) == {"a", "b"}  # two devices: cannot say which


@pytest.mark.slow
def test_validate_splits_the_networks_over_the_devices(pair_lut, profile_yaml, phones, tmp_path, capsys):
    lut = pair_lut[0]
    pair = phones[:2]
    before = [len(d.benchmark.runner.runs) for d in pair]
    out = tmp_path / "check"
    args = ["validate", "--lut", str(lut), "--device", str(profile_yaml), *serials(pair), "--samples", "6"]
    assert main([*args, "--out", str(out), "--no-progress", "--no-save", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 6 and report["backend"] == "adb" and report["normalised_by_reference"]
    graphs = [
        {r["graph"] for r in d.benchmark.runner.runs[b:] if "/reference-" not in r["graph"]}
        for d, b in zip(pair, before)
    ]
    assert all(len(g) >= 3 for g in graphs), graphs  # each device timed its half of the sub-networks


def test_all_devices_takes_the_ready_targets_only(profile_yaml, phones, monkeypatch):
    """--all-devices: every target the backend lists as ready (a phone offline or not yet authorized
    is left out), by the id its target flag takes."""
    from ofa_deploy.backend.interface import Target
    from ofa_deploy.backend.profiles import load_profile
    from ofa_deploy.backends.adb.backend import AdbBackend
    from ofa_deploy.cli.fleet_args import specs_from_args
    from ofa_deploy.cli.main import build_parser

    listed = [Target(phones[0].serial, "device"), Target("0123ABC", "unauthorized", ready=False)]
    monkeypatch.setattr(AdbBackend, "attached_targets", classmethod(lambda cls: listed))
    args = build_parser().parse_args(["deploy", "bundle", "--device", str(profile_yaml), "--all-devices"])
    assert list(specs_from_args(args, load_profile(str(profile_yaml)))) == [phones[0].serial]
    monkeypatch.setattr(AdbBackend, "attached_targets", classmethod(lambda cls: listed[1:]))
    with pytest.raises(TargetUnavailableError, match="sees no attached device"):
        specs_from_args(args, load_profile(str(profile_yaml)))
