"""One round trip to the phone: a shell script that times many models, and its output read back.

The script runs, for each round, every model once followed by the reference model, each a fresh
``benchmark_model`` process (``--num_runs`` timed runs after ``--warmup_runs``); a round's figure
is its minimum, exactly as on the host (see :mod:`ofa_deploy.backend.timing`). Every path and argument is
quoted with :func:`shlex.quote`, so a model path with spaces or shell metacharacters reaches the
device intact and runs nothing else. Markers around each run let the output be split back
without guessing.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ofa_deploy.backend.timing import LatencyStats, TimingOptions
from ofa_deploy.backends.adb.benchmark_model_output import (
    BenchmarkFailedError,
    ToolRun,
    parse_benchmark_output,
    raise_on_failure,
)

MARK = "@@ofa-deploy"
REFERENCE_TAG = "ref"


@dataclass
class BenchmarkCommand:
    """How to start benchmark_model on the device."""

    binary: str
    timing: TimingOptions
    xnnpack: bool = True
    taskset: str | None = None  # hex CPU mask, e.g. "f0" for cores 4-7

    def argv(self, model_path: str, runs: int | None = None) -> list[str]:
        argv = [
            self.binary,
            f"--graph={model_path}",
            f"--num_threads={self.timing.threads}",
            f"--num_runs={runs or self.timing.runs}",
            f"--warmup_runs={self.timing.warmup}",
            "--min_secs=0",
            "--warmup_min_secs=0",
            f"--use_xnnpack={'true' if self.xnnpack else 'false'}",
        ]
        return ["taskset", self.taskset, *argv] if self.taskset else argv


def batch_script(
    command: BenchmarkCommand,
    models: Sequence[str],
    reference: str | None,
    rounds: int,
    cooldown_s: float = 0.0,
    remove_after: Sequence[str] = (),
) -> str:
    """The shell script for one batch: ``rounds`` x (each model, then the reference)."""
    lines = ["# written by ofa-deploy: one batch of benchmark_model runs"]

    def run(tag: str, path: str, r: int) -> None:
        lines.append(f"echo {MARK} begin {tag} {r}")
        lines.append(f"{shlex.join(command.argv(path))} 2>&1")
        lines.append(f'echo "{MARK} end $?"')

    for r in range(rounds):
        for i, path in enumerate(models):
            run(f"m{i}", path, r)
            if reference is not None:
                run(REFERENCE_TAG, reference, r)
        if cooldown_s > 0 and r < rounds - 1:
            lines.append(f"sleep {cooldown_s:g}")
    if remove_after:
        lines.append(f"rm -f {shlex.join(remove_after)}")
    lines.append(f"echo {MARK} done")
    return "\n".join(lines) + "\n"


@dataclass
class BatchResults:
    """Parsed runs of one batch: per model, its rounds; and the reference run after each of them."""

    model_rounds: list[list[ToolRun]]
    reference_rounds: list[list[ToolRun]]  # [model][round]: the reference run right after


def parse_batch_output(text: str, labels: Sequence[str], reference_label: str | None) -> BatchResults:
    """Split the script's output at the markers and parse each run; a failed run names its model."""
    models: list[list[ToolRun]] = [[] for _ in labels]
    refs: list[list[ToolRun]] = [[] for _ in labels]
    current: tuple[str, list[str]] | None = None
    last_model = 0

    def index(tag: str) -> int:
        """The model a marker tag names ("m3" -> 3); anything else is output this toolkit did not write."""
        if tag.startswith("m") and tag[1:].isdigit() and int(tag[1:]) < len(labels):
            return int(tag[1:])
        raise BenchmarkFailedError(f"the benchmark batch output holds an unknown marker {tag!r} (not this batch's)")

    def label(tag: str) -> str:
        return (reference_label or "the reference") if tag == REFERENCE_TAG else labels[index(tag)]

    finished = False
    for line in text.splitlines():
        if line.startswith(f"{MARK} begin "):
            parts = line.split()
            if len(parts) < 3:
                raise BenchmarkFailedError(f"the benchmark batch output holds a marker without a tag: {line[:80]!r}")
            current = (parts[2], [])
        elif line.startswith(f"{MARK} end ") and current is not None:
            tag, body = current
            status = line.split()[2] if len(line.split()) > 2 else "?"
            result = parse_benchmark_output("\n".join(body), model=label(tag))
            if status != "0":
                raise BenchmarkFailedError(f"benchmark_model exited with status {status} on {label(tag)}")
            if tag == REFERENCE_TAG:
                refs[last_model].append(result)
            else:
                last_model = index(tag)
                models[last_model].append(result)
            current = None
        elif line.strip() == f"{MARK} done":
            finished = True
        elif current is not None:
            current[1].append(line)
    if current is not None:
        name = label(current[0])
        raise_on_failure("\n".join(current[1]), model=name)  # the run's own failure, if it printed one
        raise BenchmarkFailedError(f"benchmark_model did not finish on {name} (the batch output stops mid-run)")
    if not finished:
        tail = text.strip().splitlines()[-1:] or ["no output"]
        raise BenchmarkFailedError(f"the benchmark batch on the device did not complete ({tail[0][:160]})")
    return BatchResults(models, refs)


def stats_from_rounds(
    rounds: Sequence[ToolRun],
    reference_rounds: Sequence[ToolRun] | None = None,
    reference_baseline_ms: float | None = None,
) -> LatencyStats:
    """The toolkit's statistics from per-round benchmark_model summaries.

    The estimate is :meth:`LatencyStats.from_rounds` on the round minima (and the reference's
    round minima), exactly as on the host. benchmark_model prints summaries, not each run, so
    count, mean, std and min are pooled exactly from them, while median, p90 and p99 are
    estimated (printed medians where available; a normal approximation capped at the maximum).
    """
    minima = [r.min_ms if r.min_ms is not None else r.mean_ms for r in rounds]
    ref_minima = None
    if reference_rounds and reference_baseline_ms is not None:
        ref_minima = [r.min_ms if r.min_ms is not None else r.mean_ms for r in reference_rounds]
    base = LatencyStats.from_rounds([[m] for m in minima], ref_minima, reference_baseline_ms)
    counts = np.asarray([max(r.count or 1, 1) for r in rounds], dtype=np.float64)
    means = np.asarray([r.mean_ms for r in rounds])
    stds = np.asarray([r.std_ms or 0.0 for r in rounds])
    n = float(counts.sum())
    mean = float((counts * means).sum() / n)
    variance = float((counts * (stds**2 + means**2)).sum() / n - mean**2)
    std = math.sqrt(max(variance, 0.0) * n / (n - 1)) if n > 1 else 0.0
    highest = max(r.max_ms if r.max_ms is not None else r.mean_ms for r in rounds)
    medians = [r.median_ms if r.median_ms is not None else r.mean_ms for r in rounds]
    return dataclasses.replace(
        base,
        count=int(n),
        mean=mean,
        std=std,
        median=float(np.median(medians)),
        min=float(min(minima)),
        p90=min(mean + 1.2816 * std, highest),
        p99=min(mean + 2.3263 * std, highest),
    )
