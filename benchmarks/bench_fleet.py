"""Fleet work in parallel: one bundle deployed to 3 loopback devices vs 1, and an r=160 latency
table profiled sharded over 2 loopback devices vs 1 (wall time; every deployment checked on the
device, every table complete).

    python benchmarks/bench_fleet.py [--rounds 2] [--runs 3] [--repeat 1]

Not phones: the loopback devices (tests/adb_device, each in its own process, as a phone is its
own machine) speak the real ADB protocol to the real adb-shell client, but they run the models on
*this* machine's CPU. So the speed-up shown is bounded by this machine's free cores (on phones each
device brings its own CPU); what it shows is that the devices are driven concurrently and nothing
serialises them on the host side.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from ofa_deploy.cli.main import main as cli
from ofa_deploy.latency.table import load_lut
from ofa_deploy.space.ops import resolution_ops
from tests.adb_device.server import STUB

REPO = Path(__file__).resolve().parents[1]

ARCH = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}


class DeviceProcess:
    """A loopback ADB device in its own process (``python -m tests.adb_device.server ROOT``)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.adb_device.server", str(root)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"on (\S+:\d+),", line)
        if not match:
            self.stop()
            raise RuntimeError(f"the loopback device did not start: {line!r}")
        self.serial = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def run_cli(args: list[str]) -> tuple[int, float, dict]:
    """Exit code, wall seconds and the --json document of one CLI run."""
    buffer = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        code = cli([*args, "--json"])
    seconds = time.perf_counter() - started
    text = buffer.getvalue()
    return code, seconds, json.loads(text) if text.strip() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="repeat each measurement; the median is shown")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ofa-fleet-bench-"))
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    os.environ.pop("ANDROID_SERIAL", None)
    phones = [DeviceProcess(work / f"phone{i}") for i in range(3)]
    try:
        (work / "bin").mkdir()
        stub = work / "bin" / "benchmark_model"
        stub.write_text(f"#!{sys.executable} -S\n" + STUB.read_text())
        stub.chmod(0o755)
        profile = work / "loopback.yaml"
        profile.write_text(
            yaml.safe_dump(
                {
                    "name": "loopback",
                    "description": "loopback ADB devices (benchmark)",
                    "backend": "adb",
                    "resolutions": [160],
                    "timing": {"threads": 1, "warmup": 1, "rounds": args.rounds, "runs": args.runs},
                    "settings": {"benchmark_model": str(stub), "batch_size": 32},
                }
            )
        )
        (work / "arch.json").write_text(json.dumps(ARCH))
        bundle = work / "bundle"
        with contextlib.redirect_stdout(io.StringIO()):
            assert (
                cli(["-q", "compile", "--arch", str(work / "arch.json"), "--backend", "tflite", "--out", str(bundle)])
                == 0
            )
        timing = ["--rounds", str(args.rounds), "--runs", str(args.runs), "--no-progress"]
        rows = []

        def serials(n: int) -> list[str]:
            return [a for p in phones[:n] for a in ("--serial", p.serial)]

        for n in (1, 3):
            times = []
            for i in range(args.repeat):
                remote = f"/data/local/tmp/bench-{n}-{i}"
                code, seconds, doc = run_cli(
                    [
                        "-q",
                        "deploy",
                        str(bundle),
                        "--device",
                        str(profile),
                        *serials(n),
                        "--remote-dir",
                        remote,
                        *timing,
                    ]
                )
                ok = code == 0 and all(r["status"] == "deployed" and r["verified_on_device"] for r in doc["devices"])
                assert ok, doc
                times.append(seconds)
            rows.append([f"deploy 1 bundle to {n} device(s)", f"{sorted(times)[len(times) // 2]:.2f}"])
        keys = {op.key for op in resolution_ops(160, 1.0)}
        for n in (1, 2):
            times = []
            for i in range(args.repeat):
                out = work / f"lut-{n}-{i}.json"
                code, seconds, _ = run_cli(
                    ["-q", "profile", "--device", str(profile), *serials(n), "--out", str(out), *timing]
                )
                assert code == 0 and set(load_lut(out).tables[160]) == keys
                times.append(seconds)
            rows.append([f"profile r=160 ({len(keys)} keys) on {n} device(s)", f"{sorted(times)[len(times) // 2]:.2f}"])
    finally:
        for phone in phones:
            phone.stop()
        shutil.rmtree(work, ignore_errors=True)
    one_deploy, three_deploy = float(rows[0][1]), float(rows[1][1])
    one_profile, two_profile = float(rows[2][1]), float(rows[3][1])
    print(f"\nfleet work on loopback ADB devices ({machine()}; rounds {args.rounds}, runs {args.runs})")
    print_table(["task", "wall s"], rows)
    print(
        f"\ndeploy: 3 devices take {three_deploy / one_deploy:.2f}x the time of 1 (3.00x if serial); "
        f"profile: 2 devices take {two_profile / one_profile:.2f}x the time of 1 (1.00x if no gain)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
