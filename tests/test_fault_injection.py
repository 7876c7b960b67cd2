"""kill -9 in the middle of profile and compile, and a full disk: work is kept, outputs stay whole."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.errors import OFADeployError
from ofa_deploy.files import atomic_write_text
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.ops import resolution_ops

CLI = [sys.executable, "-m", "ofa_deploy"]
TIMING = ["--rounds", "3", "--runs", "6", "--no-progress"]
PROFILE = ["profile", "--backend", "onnxruntime", "--resolutions", "128,136,144", *TIMING]


def _kill_after(args: list[str], seconds: float, started=None) -> int:
    """Run the CLI and kill -9 it ``seconds`` after ``started()`` first holds (or after launch)."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while started is not None and not started() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(seconds)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


@pytest.mark.slow
def test_profile_killed_at_random_points_resumes_to_the_full_table(tmp_path):
    out = tmp_path / "t.json"
    rng = random.Random(7)
    killed = 0
    for _ in range(3):
        args = [*PROFILE, "--out", str(out), *(["--resume"] if out.exists() else [])]
        # kill once measuring has begun (the lock is taken), a random moment later
        if _kill_after(args, rng.uniform(0.0, 0.8), started=(tmp_path / "t.json.lock").exists) == -signal.SIGKILL:
            killed += 1
        if out.exists():  # whatever instant the kill hit, the file on disk is a whole, loadable table
            load_lut(out)
    assert killed >= 1, "no run was interrupted: make the profile slower or the kills earlier"
    done = subprocess.run([*CLI, *PROFILE, "--out", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = load_lut(out)
    for r in (128, 136, 144):
        assert set(table.tables[r]) == {op.key for op in resolution_ops(r, 1.0)}
    assert not (tmp_path / "t.json.lock").exists()


@pytest.mark.slow
def test_compile_killed_leaves_the_old_bundle_or_the_new_one(tmp_path):
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 128}))
    out = tmp_path / "bundle"
    compile_args = ["compile", "--arch", str(arch), "--backend", "onnxruntime", "--out", str(out), "--force"]
    assert subprocess.run([*CLI, *compile_args], capture_output=True).returncode == 0
    rng = random.Random(3)
    for _ in range(3):
        _kill_after(compile_args, rng.uniform(0.5, 4.0))
        check = subprocess.run([*CLI, "benchmark", str(out), "--rounds", "1", "--runs", "1"], capture_output=True)
        assert check.returncode == 0, check.stderr  # a whole bundle whose checksums and digest verify
    # the next compile clears what a killed one left beside the bundle
    assert subprocess.run([*CLI, *compile_args], capture_output=True).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "bundle"]


def test_disk_full_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    target.write_text("old")

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OFADeployError, match="no space left") as info:
        atomic_write_text(target, "new")
    assert info.value.exit_code == 1
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_profile_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code = main([*PROFILE, "--out", str(blocker / "t.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a directory" in err[0]
