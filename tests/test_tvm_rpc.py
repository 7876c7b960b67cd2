"""The tvm backend over real TVM RPC: TVM's own rpc_tracker and rpc_server processes on 127.0.0.1
(tests/tvm_rpc_cluster.py), llvm target. Profile through the CLI with two servers under one key
(work spread over both), validate and compile + benchmark through the tracker, a key with no
server (exit 3 within --rpc-timeout), and a server killed mid-profile (then --resume)."""

from __future__ import annotations

import csv
import json
import time

import pytest
import yaml

pytest.importorskip("tvm", reason="the tvm extra is not installed (pip install 'ofa-deploy[tvm]')")

from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.tvm.backend import TvmBackend
from ofa_deploy.cli.main import main
from ofa_deploy.errors import TargetUnavailableError
from ofa_deploy.latency.profiling import ProfilePlan, profile, profile_metadata, reference_key
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.arch import smallest_arch
from ofa_deploy.space.ops import resolution_ops
from tests.tvm_rpc_cluster import rpc_cluster, stop

pytestmark = pytest.mark.slow  # starts TVM processes and builds ~100 libraries: about a minute
FAST = TimingOptions(threads=1, warmup=0, rounds=2, runs=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with rpc_cluster(tmp_path_factory.mktemp("rpc"), servers=2, key="ofa-two") as running:
        yield running


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory):
    """tvm-llvm-host with short timing, so a whole resolution profiles in well under a minute."""
    path = tmp_path_factory.mktemp("profile") / "tvm-quick.yaml"
    doc = {
        "name": "tvm-quick",
        "description": "host CPU over TVM RPC (tests)",
        "backend": "tvm",
        "resolutions": [160],
        "timing": {"threads": 1, "warmup": 0, "rounds": 2, "runs": 2},
        "settings": {"target": "llvm", "cross_compiler": "host", "batch_size": 24, "build_workers": 2},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def connection(cluster, timeout: float = 30) -> list[str]:
    return ["--rpc-tracker", cluster.tracker_address, "--rpc-key", cluster.key, "--rpc-timeout", str(timeout)]


def loaded_modules(cluster) -> list[int]:
    """Libraries each server loaded (from its own log)."""
    logs = sorted(cluster.workdir.glob("server-*.log"))
    return [path.read_text(errors="replace").count("load_module") for path in logs]


@pytest.fixture(scope="module")
def rpc_lut(cluster, quick_profile, tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "tvm.json"
    args = ["profile", "--device", str(quick_profile), *connection(cluster), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    return out


def test_profile_over_the_tracker_spreads_work_over_both_servers(rpc_lut, cluster):
    table = load_lut(rpc_lut)
    assert len(table.tables[160]) == len({op.key for op in resolution_ops(160, 1.0)})
    assert table.metadata.backend == "tvm" and table.metadata.reference is not None
    assert "rpc_tracker" not in table.metadata.settings  # today's addresses are not part of the table
    first, second = loaded_modules(cluster)[:2]  # the module's two servers (later tests start their own)
    assert first > 20 and second > 20, (first, second)  # both devices timed a share of the keys


def test_validate_through_the_tracker(rpc_lut, cluster, quick_profile, tmp_path, capsys):
    cluster.wait_free(2)
    args = ["validate", "--lut", str(rpc_lut), "--device", str(quick_profile), *connection(cluster)]
    code = main([*args, "--samples", "4", "--out", str(tmp_path / "v"), "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["samples"] == 4 and report["normalised_by_reference"]
    assert report["held_out"] == 2 and -1 <= report["all_before"]["kendall_tau"] <= 1
    # every sub-network was measured on the boards and predicted from the table built over the tracker;
    # how well the two agree is benchmarks/bench_tvm.py's claim ("within ±10%", MAPE): with 4 samples on
    # a loaded host the rank correlation was 0.0 once (stress run, 2026-12-07), so it is not asserted here
    with (tmp_path / "v" / "measurements.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {row["split"] for row in rows} == {"fit", "held_out"}
    assert all(float(row["measured_ms"]) > 0 and float(row["predicted_ms"]) > 0 for row in rows)
    assert len({row["arch_hash"] for row in rows}) == 4  # four different sub-networks


def test_compile_then_benchmark_through_the_tracker(rpc_lut, cluster, quick_profile, tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(smallest_arch(160).to_dict()))
    bundle = tmp_path / "bundle"
    lut = ["--lut", str(rpc_lut)]
    assert main(["compile", "--arch", str(arch), "--device", str(quick_profile), *lut, "--out", str(bundle)]) == 0
    assert json.loads((bundle / "manifest.json").read_text())["verification"]["passed"] is True
    cluster.wait_free(2)
    capsys.readouterr()
    args = ["benchmark", str(bundle), "--device", str(quick_profile), *connection(cluster), *lut, "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "tvm" and result["normalised_by_reference"] and result["measured_ms"] > 0
    # measured against predicted, reported as such; how close they are is a benchmark's claim
    # (benchmarks/bench_tvm.py): on a loaded 2-core host a short-timed table missed by 3.6x once
    assert result["predicted_ms"] > 0
    assert result["ratio_measured_to_predicted"] == pytest.approx(result["measured_ms"] / result["predicted_ms"])


def test_direct_server_without_a_tracker(tmp_path):
    with rpc_cluster(tmp_path, servers=0, tracker=False) as cluster:
        port = cluster.start_standalone_server()
        ops = resolution_ops(160, 1.0)[:2]
        with TvmBackend(FAST, rpc=f"127.0.0.1:{port}", rpc_timeout=30) as backend:
            reference = backend.reference(reference_key(1.0))
            results = backend.measure(ops, reference)
        assert backend.devices_used == 1 and not backend.times_on_host
        assert all(results[op.key].estimate > 0 and results[op.key].reference_ms > 0 for op in ops)


def test_key_without_a_server_is_exit_3_within_the_timeout(cluster, tmp_path, capsys):
    started = time.monotonic()
    code = main(
        [
            "profile",
            "--backend",
            "tvm",
            "--rpc-tracker",
            cluster.tracker_address,
            "--rpc-key",
            "no-such-board",
            "--rpc-timeout",
            "2",
            "--out",
            str(tmp_path / "t.json"),
        ]
    )
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and "no free TVM RPC server for key 'no-such-board'" in err[-1], err
    assert elapsed < 20  # the timeout, plus building the reference operator


def test_servers_killed_mid_profile_failover_then_resume(cluster, tmp_path):
    """Two servers under their own key at the module's tracker: one dies after the first batch and
    the other finishes the second alone; then the last one dies too: the measured keys stay in the
    table, the error is one line naming --resume, and a new server registered under the key finishes
    the rest."""
    ops = resolution_ops(160, 1.0)[:8]
    plan = ProfilePlan(1.0, (160,), {op.key: op for op in ops}, {160: {op.key for op in ops}})
    out = tmp_path / "lut.json"
    key = "ofa-resume"
    boards = cluster.start_servers(2, key)
    settings = {"rpc_tracker": cluster.tracker_address, "rpc_key": key, "rpc_timeout": 5, "batch_size": 2}
    with TvmBackend(FAST, **settings) as backend:
        measure, calls = backend.measure, []

        def measure_then_kill(chunk, reference):
            results = measure(chunk, reference)
            stop(boards[len(calls)])  # after batch 1 the first board goes, after batch 2 the second
            calls.append(len(chunk))
            return results

        backend.measure = measure_then_kill
        with pytest.raises(TargetUnavailableError, match="--resume"):
            profile(backend, plan, out, profile_metadata(backend, "tvm-llvm-host"), progress=False)
        assert backend.devices_used == 2  # no replacement was free: the survivor did batch 2 alone
    partial = load_lut(out).tables[160]
    assert calls == [2, 2] and len(partial) == 4
    replacement = cluster.start_server(key)
    try:
        settings["rpc_timeout"] = 30
        with TvmBackend(FAST, **settings) as backend:
            table = profile(backend, plan, out, profile_metadata(backend, "tvm-llvm-host"), resume=True, progress=False)
    finally:
        stop(replacement)
    assert set(table.tables[160]) == set(plan.ops)
    assert all(table.tables[160][key] == record for key, record in partial.items())  # kept, not re-measured
