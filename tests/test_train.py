"""Progressive-shrinking training: schedule and sampling, a tiny run of every phase through the CLI,
and a real kill + ``--resume`` that must end where an uninterrupted run ends."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError
from ofa_deploy.nn.supernet import load_supernet
from ofa_deploy.space.arch import N_BLOCKS, N_STAGES
from ofa_deploy.train.checkpoint import read_log
from ofa_deploy.train.progressive_shrinking import batch_plan, learning_rate, sample_subnets
from ofa_deploy.train.recipe import IMAGENET, PHASE_NAMES, SMOKE, customise

pytest.importorskip("sklearn", reason="--dataset digits needs scikit-learn (the 'train' extra)")

REPO = Path(__file__).resolve().parents[1]
# Every phase, one step each, 32x32-pixel digits (r=128 at digits' quarter scale), batch 8.
TINY = ["--dataset", "digits", "--batch-size", "8", "--resolutions", "128", "--eval-images", "32", "--no-progress"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- recipe, schedule, sampling


def test_imagenet_recipe_is_the_official_schedule():
    by_name = {p.name: p for p in IMAGENET.phases}
    assert tuple(by_name) == PHASE_NAMES == ("full", "kernel", "depth1", "depth2", "width1", "width2")
    assert [by_name[n].subnets_per_step for n in ("kernel", "depth2", "width2")] == [1, 2, 4]
    assert by_name["kernel"].ks == (7, 5, 3) and by_name["kernel"].d == (4,)
    assert by_name["depth1"].d == (3, 4) and by_name["depth2"].d == (2, 3, 4)
    assert by_name["width1"].e == (6, 4) and by_name["width2"].e == (6, 4, 3)
    assert [by_name[n].sort_channels_stage for n in ("width1", "width2")] == [0, 1]
    assert not by_name["full"].distill and all(p.distill for p in IMAGENET.phases[1:])
    assert IMAGENET.lr(by_name["kernel"]) == pytest.approx(3e-2 * 2048 / 64)  # linear scaling from 64 images
    assert "train_ofa_net.py" in IMAGENET.source


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [learning_rate(0.1, s, 100, 10) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] < 1e-3


def test_sub_network_sampling_is_a_function_of_seed_phase_and_step():
    phase = SMOKE.phases[4]  # width1: 4 sub-networks, E {6,4}
    first = sample_subnets(phase, seed=0, phase_index=4, step=7)
    assert first == sample_subnets(phase, seed=0, phase_index=4, step=7)
    assert first != sample_subnets(phase, seed=0, phase_index=4, step=8)
    assert len(first) == 4
    for subnet in first:
        assert len(subnet["ks"]) == N_BLOCKS and len(subnet["d"]) == N_STAGES
        assert set(subnet["e"]) <= {4, 6} and set(subnet["d"]) <= {2, 3, 4} and set(subnet["ks"]) <= {3, 5, 7}


def test_ranks_split_the_same_batch_at_the_same_resolution():
    recipe = customise(SMOKE, batch_size=8, resolutions=(128, 160, 192))
    plans = [batch_plan(recipe, 100, 0, 2, 5, rank, 2) for rank in (0, 1)]
    single = batch_plan(recipe, 100, 0, 2, 5)
    assert sorted(plans[0][0] + plans[1][0]) == sorted(single[0]) and len(single[0]) == 8
    assert plans[0][1] == plans[1][1] == single[1]
    resolutions = {batch_plan(recipe, 100, 0, 2, s)[1] for s in range(30)}
    assert resolutions == {128, 160, 192}  # elastic resolution: one per batch


def test_overrides_are_checked():
    with pytest.raises(BadInputError, match="--phases"):
        customise(SMOKE, phases="kernel,shrink")
    with pytest.raises(BadInputError, match="--resolutions"):
        customise(SMOKE, resolutions=(100,))
    kept = customise(SMOKE, phases="width2,kernel")
    assert [p.name for p in kept.phases] == ["kernel", "width2"]


# ---------------------------------------------------------------------- the whole run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    code = main(["train", *TINY, "--steps-per-phase", "1", "--out", str(out), "--json"])
    assert code == 0
    return out


def test_every_phase_runs_and_writes_the_official_layout(tiny_run):
    info = json.loads((tiny_run / "supernet.json").read_text())
    assert info["phases_completed"] == list(PHASE_NAMES)
    assert info["n_classes"] == 10 and info["resolutions"] == [128]
    state = torch.load(tiny_run / "supernet.pth", map_location="cpu", weights_only=True)
    assert len(state) == 475  # the official ofa_mbv3_d234_e346_k357_w1.0 key count
    assert "blocks.1.conv.depth_conv.conv.7to5_matrix" in state
    assert state["classifier.linear.weight"].shape == (10, 1280)  # only the classifier differs
    for name in PHASE_NAMES:
        assert (tiny_run / "phases" / f"{name}.pth").is_file()
    net = load_supernet(tiny_run / "supernet.pth")
    assert net.classifier.linear.out_features == 10
    assert (tiny_run / "train_curves.png").stat().st_size > 1000
    ends = [r for r in read_log(tiny_run / "train_log.jsonl") if r["event"] == "phase_end"]
    assert [r["phase"] for r in ends] == list(PHASE_NAMES)
    assert all(0.0 <= r["acc_largest"] <= 1.0 and 0.0 <= r["acc_smallest"] <= 1.0 for r in ends)


def test_the_kernel_matrices_are_learned(tiny_run):
    full = torch.load(tiny_run / "phases" / "full.pth", weights_only=True)
    kernel = torch.load(tiny_run / "phases" / "kernel.pth", weights_only=True)
    key = "blocks.5.conv.depth_conv.conv.7to5_matrix"
    assert torch.equal(full[key], torch.eye(25))  # the full network never uses them
    assert not torch.equal(kernel[key], torch.eye(25))


def test_an_existing_run_is_not_overwritten(tiny_run, capsys):
    before = (tiny_run / "supernet.pth").stat().st_mtime_ns
    code, _, err = run_cli(["train", *TINY, "--out", str(tiny_run)], capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (tiny_run / "supernet.pth").stat().st_mtime_ns == before


def test_a_finished_run_resumes_to_nothing_left(tiny_run, capsys):
    code, out, _ = run_cli(["train", *TINY, "--out", str(tiny_run), "--resume", "--json"], capsys)
    assert code == 0 and json.loads(out)["completed"] == list(PHASE_NAMES)


def test_a_state_from_another_version_is_one_line_on_resume(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = torch.load(run / "train_state.pth", weights_only=True)
    state["settings"]["a_field_from_a_later_version"] = 1
    torch.save(state, run / "train_state.pth")
    code, _, err = run_cli(["train", *TINY, "--out", str(run), "--resume"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot read" in err and "a_field_from_a_later_version" in err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--dataset", "mnist"], "--dataset"),
        (["--dataset", "imagefolder:/nonexistent"], "train/"),
        (["--dataset", "digits", "--phases", "full,shrink"], "--phases"),
        (["--dataset", "digits", "--recipe", "cifar"], "--recipe"),
        (["--dataset", "digits", "--resolutions", "130"], "--resolutions"),
        (["--dataset", "digits", "--batch-size", "0"], "--batch-size"),
        (["--dataset", "digits", "--resume"], "nothing to resume"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, names):
    code, _, err = run_cli(["train", *argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and names in err


def test_phases_without_full_need_a_teacher(tmp_path, capsys):
    code, _, err = run_cli(["train", *TINY, "--phases", "kernel", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "--init" in err


# ---------------------------------------------------------------------- kill and resume


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every run compared


def _spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, timeout=600)


def kill_when_logged(proc: subprocess.Popen, log: Path, phase: str, step: int, timeout: float = 240) -> None:
    """SIGKILL the run (its whole process group) once the log shows ``phase`` at ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {proc.communicate()[1].decode()[-2000:]}")
        if any(r.get("phase") == phase and r.get("step", 0) >= step for r in read_log(log)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"no step {step} of {phase} within {timeout} s")


def step_records(log: Path, phase: str) -> list[int]:
    return [r["step"] for r in read_log(log) if r.get("event") == "step" and r["phase"] == phase]


RESUMABLE = [*TINY, "--phases", "full,kernel,depth1", "--steps-per-phase", "6", "--save-every", "1", "--log-every", "1"]


@pytest.mark.slow
def test_kill_mid_phase_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    cli = [sys.executable, "-m", "ofa_deploy", "train", *RESUMABLE]
    uninterrupted = _spawn([*cli, "--out", str(straight)])  # meanwhile (one thread each, same arithmetic)
    try:
        proc = _spawn([*cli, "--out", str(killed)])
        kill_when_logged(proc, killed / "train_log.jsonl", "kernel", 2)
        info = json.loads((killed / "supernet.json").read_text())
        assert info["phases_completed"] == ["full"]  # killed mid-phase: kernel not done
        resumed = _run([*cli, "--out", str(killed), "--resume", "--json"])
        assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
        assert json.loads(resumed.stdout)["completed"] == ["full", "kernel", "depth1"]
        assert b"resuming" in resumed.stderr
        # continued from the last saved step: every step of each phase logged exactly once
        for phase in ("full", "kernel", "depth1"):
            assert step_records(killed / "train_log.jsonl", phase) == [1, 2, 3, 4, 5, 6]

        _, stderr = uninterrupted.communicate(timeout=600)
        assert uninterrupted.returncode == 0, stderr.decode()[-2000:]
    finally:  # a failed assertion leaves no training behind
        if uninterrupted.poll() is None:
            os.killpg(uninterrupted.pid, signal.SIGKILL)
            uninterrupted.wait()
    a = torch.load(killed / "supernet.pth", weights_only=True)
    b = torch.load(straight / "supernet.pth", weights_only=True)
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, f"the resumed run differs from the uninterrupted one by {worst}"
    losses = [[r["loss"] for r in read_log(d / "train_log.jsonl") if r["event"] == "step"] for d in (killed, straight)]
    assert np.allclose(losses[0], losses[1], atol=1e-4)
