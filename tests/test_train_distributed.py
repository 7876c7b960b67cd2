"""Data-parallel training under ``torchrun`` on CPU (gloo, 2 processes): identical sub-network
sampling on both ranks, files written by rank 0 only, and a real kill + ``--resume``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_train import TINY, _run, _spawn, kill_when_logged, step_records  # tests/ is on sys.path

from ofa_deploy.errors import OFADeployError
from ofa_deploy.train.checkpoint import read_log
from ofa_deploy.train.distributed import DistContext

pytest.importorskip("sklearn", reason="--dataset digits needs scikit-learn (the 'train' extra)")


def _check_same_worker(rank: int, init_file: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ctx = DistContext(rank=rank, world_size=2, backend="gloo")
    ctx.check_same("step 3: same sub-networks")
    try:
        ctx.check_same(f"step 4: rank {rank}'s own sub-networks")
        results.put((rank, "passed"))
    except OFADeployError:
        results.put((rank, "refused"))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_that_sample_differently_are_stopped(tmp_path):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_check_same_worker, args=(r, str(tmp_path / "init"), results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(results.get(timeout=5) for _ in procs) == [(0, "refused"), (1, "refused")]


@pytest.mark.slow
def test_torchrun_two_processes_train_resume_and_only_rank_0_writes(tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cli = [*torchrun, "-m", "ofa_deploy", "train", *TINY, "--phases", "full,kernel", "--steps-per-phase", "4"]
    cli += ["--save-every", "1", "--log-every", "1", "--out", str(out)]
    proc = _spawn(cli)
    kill_when_logged(proc, out / "train_log.jsonl", "kernel", 1)
    assert json.loads((out / "supernet.json").read_text())["phases_completed"] == ["full"]

    done = _run([*cli, "--resume", "--json"])
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary = json.loads(done.stdout)  # rank 0's document only: one JSON document on stdout
    assert summary["world_size"] == 2 and summary["completed"] == ["full", "kernel"]
    for phase in ("full", "kernel"):
        assert step_records(out / "train_log.jsonl", phase) == [1, 2, 3, 4]  # one writer, no step twice
    # the per-step check all-reduced every step's sub-networks and resolution: it passed on both ranks
    assert all(len(r["subnets"]) == 1 for r in read_log(out / "train_log.jsonl") if r["event"] == "step")
    leftovers = sorted(p.name for p in Path(out).rglob("*") if p.name.startswith(".") or p.suffix == ".lock")
    assert leftovers == []
