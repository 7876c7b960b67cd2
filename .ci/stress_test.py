"""Find flaky tests: run `make test` N times, each time in a fresh clone, while a busy loop occupies one core.

    python .ci/stress_test.py [--runs 10] [--ref HEAD] [--no-hog] [--work DIR]     (make stress-test RUNS=10)

Each run clones the committed REF of this repository (uncommitted changes are not tested) into the same
path, with `shared` beside it as CI has it, sets up the virtualenv (kept outside the clone; reinstalled
only when the install files change), then times `make test` alone. pytest writes a JUnit XML file per
run; at the end a table lists every test that failed at least once and how often, with the wall time of
each run. Results are written to WORK/results.json after every run, so an interrupted stress run keeps
what it found. The exit status is 1 when any run failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_FILES = ("pyproject.toml", "setup.py", "constraints.txt")  # what the Makefile's install step depends on


def start_hog(core: int) -> subprocess.Popen:
    """A busy loop pinned to one core (the load the suite must survive)."""
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def failed_tests(junit: Path) -> tuple[list[str], int]:
    """The node ids of failed or errored tests in a JUnit XML file, and how many tests it holds."""
    if not junit.is_file():
        return [], 0
    failed, total = [], 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/")
            failed.append(f"{module}.py::{case.get('name')}")
    return failed, total


def one_run(index: int, args: argparse.Namespace, clone: Path, venv: Path, log_dir: Path) -> dict:
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", args.commit], check=True)
    make = ["make", "-C", str(clone), f"VENV={venv}"]
    log = log_dir / f"run{index:02d}.log"
    # the clone is fresh, so make would reinstall every time: skip that while the install files are unchanged
    # (the editable install points at the same clone path)
    installed_for = venv / ".stress-install-digest"
    digest = hashlib.sha256(b"".join((clone / name).read_bytes() for name in INSTALL_FILES)).hexdigest()
    if (venv / ".installed").is_file() and installed_for.is_file() and installed_for.read_text() == digest:
        (venv / ".installed").touch()
    with log.open("w") as out:
        setup = subprocess.run([*make, f"{venv}/.installed"], stdout=out, stderr=subprocess.STDOUT)
        if setup.returncode != 0:
            return {"run": index, "passed": False, "setup_failed": True, "failed": [], "tests": 0, "wall_s": 0.0}
        installed_for.write_text(digest)
        junit = log_dir / f"run{index:02d}.xml"
        env = {**os.environ, "PYTEST_ADDOPTS": f"--junitxml={junit}"}
        started = time.monotonic()
        result = subprocess.run([*make, "test"], stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.monotonic() - started
    failed, total = failed_tests(junit)
    return {
        "run": index,
        "passed": result.returncode == 0,
        "exit_code": result.returncode,
        "failed": failed,
        "tests": total,
        "wall_s": round(wall, 1),
        "log": str(log),
    }


def report(runs: list[dict], hog: bool) -> str:
    lines = [
        f"{len(runs)} run(s) of `make test` from a fresh clone, {'one core busy' if hog else 'no extra load'}:",
        "",
        "| run | result | tests | wall time |",
        "|----:|--------|------:|----------:|",
    ]
    for run in runs:
        result = "pass" if run["passed"] else ("setup failed" if run.get("setup_failed") else "FAIL")
        lines.append(f"| {run['run']} | {result} | {run['tests']} | {run['wall_s']:.0f} s |")
    counts = Counter(test for run in runs for test in run["failed"])
    lines.append("")
    if counts:
        lines += ["| test | failed in |", "|------|----------:|"]
        lines += [f"| {test} | {n} of {len(runs)} |" for test, n in counts.most_common()]
    else:
        lines.append("No test failed in any run.")
    failed_runs = sum(not run["passed"] for run in runs)
    lines.append(f"\n{len(runs) - failed_runs} passed, {failed_runs} failed")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ref", default="HEAD", help="the commit to test (default: HEAD)")
    parser.add_argument("--no-hog", dest="hog", action="store_false", help="no busy loop on a core")
    parser.add_argument("--core", type=int, default=0, help="the core the busy loop occupies")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ofa-deploy-stress"))
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared/ data to put beside")
    args = parser.parse_args()
    args.commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", args.ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    work = args.work.resolve()
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    shared = work / "shared"
    if args.shared.is_dir() and not shared.exists():
        shared.symlink_to(args.shared.resolve())
    clone, venv = work / "ofa-deploy", work / "venv"
    hog = start_hog(args.core) if args.hog else None
    runs: list[dict] = []
    try:
        for index in range(1, args.runs + 1):
            run = one_run(index, args, clone, venv, log_dir)
            runs.append(run)
            status = "pass" if run["passed"] else f"FAIL ({', '.join(run['failed']) or 'see ' + run['log']})"
            print(f"run {index}/{args.runs}: {status}, {run['wall_s']:.0f} s", file=sys.stderr, flush=True)
            summary = {"commit": args.commit, "hog": args.hog, "runs": runs}
            (work / "results.json").write_text(json.dumps(summary, indent=1))
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    print(f"commit {args.commit[:12]}")
    print(report(runs, args.hog))
    return 0 if all(run["passed"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
