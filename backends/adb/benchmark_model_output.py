"""Read what TFLite's ``benchmark_model`` prints: timings, per-operator tables, and failures.

Pure text in, numbers out, so it is tested on recorded outputs without a phone. It understands
the formats seen across TensorFlow / LiteRT releases:

* statistics lines ``count=50 first=.. curr=.. min=.. max=.. avg=.. std=..`` (optionally with
  ``p5= median= p95=``), the older ``curr=.. count=..`` order, and the ``count=N curr=T(all same)``
  form printed when every run took the same time; with or without the ``INFO:`` log prefix;
* the summary ``Inference timings in us: Init: .., First inference: .., Warmup (avg): ..,
  Inference (avg): ..`` and the older ``Average inference timings in us: Warmup: .., Init: ..,
  no stats: ..``;
* the ``--enable_op_profiling=true`` tables ("Operator-wise Profiling Info for Regular Benchmark
  Runs" / "Run Order").

The last statistics line before the summary is the timed runs, the one before it the warm-up.
Failures (``ERROR:`` lines, a missing binary, a crash) become one line naming the model.
"""

from __future__ import annotations

import math
import re

from ofa_deploy.backend.tool_output import OperatorTiming, ToolRun
from ofa_deploy.errors import OFADeployError, TargetUnavailableError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PREFIX = r"^\s*(?:[A-Z]+:\s+)?"  # the log prefix newer releases put on every line ("INFO: ")
_STATS_LINE = re.compile(_PREFIX + r"(?:count|curr)=" + _NUMBER + r".*$")
_PAIR = re.compile(r"(\w+)=(" + _NUMBER + ")")
_SUMMARY = re.compile(_PREFIX + r"Inference timings in us:\s*(.*)$")
_OLD_SUMMARY = re.compile(_PREFIX + r"Average inference timings in us:\s*(.*)$")
_SUMMARY_FIELD = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*(" + _NUMBER + ")")
_GRAPH = re.compile(_PREFIX + r"Graph:\s*\[(.*)\]\s*$")
_ERROR = re.compile(r"^\s*(?:ERROR|FATAL)\s*:\s*(.*)$")
_REASON = re.compile(r"(?i)\b(?:fail|error|cannot|unable)")
_MISSING = re.compile(r"(?:not found|No such file or directory|inaccessible|Permission denied|CANNOT LINK EXECUTABLE)")
_CRASH = re.compile(r"(Segmentation fault|Aborted|Bus error|Illegal instruction|Killed|SIGSEGV|SIGABRT)")
_RUN_ORDER = re.compile(r"=+\s*Run Order\s*=+")
_OP_PROFILE = re.compile(r"Operator-wise Profiling Info for Regular Benchmark Runs")
_SECTION = re.compile(r"^\s*(?:[A-Z]+:\s+)?=+\s*[^=]+=+\s*$")
_COLUMN = re.compile(r"\[([^\]]+)\]")
_OP_ROW = re.compile(r"^\s*(?:[A-Z]+:\s+)?(.+?)\s+((?:" + _NUMBER + r"%?\s+)+)(?:\[(.*)\]|(\S+))\s*$")


class BenchmarkFailedError(OFADeployError):
    """benchmark_model ran but failed, crashed, or printed nothing this parser can read."""


class BenchmarkBinaryMissingError(TargetUnavailableError):
    """The device could not start benchmark_model (missing, not executable, wrong ABI)."""


def _stats(line: str) -> dict[str, float]:
    values = {key: float(value) for key, value in _PAIR.findall(line)}
    if "count" in values and "min" not in values and "curr" in values:  # "(all same)" or a single run
        values.update(min=values["curr"], max=values["curr"], avg=values["curr"], std=0.0)
    return values


def _count(value: float | None) -> int | None:
    """A run count as printed (None when absent or not a count, e.g. an overflowing ``1e999``)."""
    return int(value) if value is not None and math.isfinite(value) and value >= 0 else None


def _summary(text: str) -> dict[str, float]:
    return {name.strip().lower(): float(value) for name, value in _SUMMARY_FIELD.findall(text)}


def _model_name(lines: list[str], model: str | None) -> str:
    if model:
        return model
    for line in lines:
        match = _GRAPH.match(line)
        if match:
            return match.group(1)
    return "the model"


def _first_present(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def raise_on_failure(text: str, model: str | None = None) -> None:
    """Raise if the output reports a crash or an ``ERROR:`` line, even when it is cut short."""
    lines = text.splitlines()
    _raise_on_failure(lines, _model_name(lines, model))


def _raise_on_failure(lines: list[str], name: str) -> None:
    for line in lines:
        if _CRASH.search(line):
            raise BenchmarkFailedError(f"benchmark_model crashed on {name}: {line.strip()}")
    for line in lines:
        match = _ERROR.match(line)
        if match:
            raise BenchmarkFailedError(f"benchmark_model failed on {name}: {match.group(1).strip()}")


def _raise_no_timings(lines: list[str], name: str) -> None:
    exception = _exception_line(lines)
    if exception:  # a wrapper script around the binary ran and crashed: the binary is not "missing"
        raise BenchmarkFailedError(f"benchmark_model crashed on {name}: {exception[:160]}")
    for line in lines:
        if _MISSING.search(line):
            raise BenchmarkBinaryMissingError(
                f"the device could not run benchmark_model for {name}: {line.strip()} "
                "(give the Android benchmark_model binary for this device's ABI; see docs/adb.md)"
            )
    reason = next((line.strip() for line in lines if _REASON.search(line)), None)
    reason = reason or next((line.strip() for line in lines if line.strip()), "no output")
    raise BenchmarkFailedError(f"benchmark_model printed no timings for {name} ({reason[:160]})")


def _exception_line(lines: list[str]) -> str | None:
    """The exception a wrapper script's Python traceback ends with (its last non-indented line)."""
    for start, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            tail = [rest.strip() for rest in lines[start + 1 :] if rest.strip() and not rest.startswith((" ", "\t"))]
            return tail[0] if tail else None
    return None


def _op_table(lines: list[str]) -> list[OperatorTiming]:
    """The "Run Order" table of the regular runs (the first one when no section title is printed)."""
    start = 0
    for i, line in enumerate(lines):
        if _OP_PROFILE.search(line):
            start = i
            break
    for i in range(start, len(lines)):
        if _RUN_ORDER.search(lines[i]):
            return _table_rows(lines[i + 1 :])
    return []


def _table_rows(lines: list[str]) -> list[OperatorTiming]:
    columns: list[str] = []
    rows = []
    for line in lines:
        if _SECTION.match(line) or (rows and not line.strip()):
            break
        if not columns:
            found = [c.strip().lower() for c in _COLUMN.findall(line)]
            if found and found[0] == "node type":
                columns = found[1:-1]  # the numeric columns between node type and name
            continue
        match = _OP_ROW.match(line)
        if not match:
            continue
        numbers = [float(v.rstrip("%")) for v in match.group(2).split()]
        values = dict(zip(columns, numbers))
        called = _count(values.get("times called"))
        rows.append(
            OperatorTiming(
                node_type=match.group(1).strip(),
                name=match.group(3) if match.group(3) is not None else match.group(4),
                first_ms=values.get("first"),
                avg_ms=values.get("avg ms", numbers[0]),
                percent=values.get("%"),
                times_called=called,
            )
        )
    return rows


def parse_benchmark_output(text: str, model: str | None = None) -> ToolRun:
    """The timings of one benchmark_model run; raises a one-line error naming the model if it failed."""
    lines = text.splitlines()
    name = _model_name(lines, model)
    _raise_on_failure(lines, name)
    stats_lines, summary, old_summary = [], None, None
    for line in lines:
        if _SUMMARY.match(line):
            summary = _summary(_SUMMARY.match(line).group(1))
        elif _OLD_SUMMARY.match(line):
            old_summary = _summary(_OLD_SUMMARY.match(line).group(1))
        elif _STATS_LINE.match(line) and summary is None and old_summary is None:
            stats_lines.append(_stats(line))
    # the timed runs: a positive, finite count and an average (a line cut short has neither)
    stats_lines = [s for s in stats_lines if _count(s.get("count")) and "avg" in s]
    timed = stats_lines[-1] if stats_lines else None
    warmup = stats_lines[-2] if len(stats_lines) > 1 else None
    if timed is None and summary is None and old_summary is None:
        _raise_no_timings(lines, name)
    us = 1e-3
    if timed is not None:
        mean_us = timed["avg"]
    elif summary is not None and "inference (avg)" in summary:
        mean_us = summary["inference (avg)"]
    elif old_summary is not None and "no stats" in old_summary:
        mean_us = old_summary["no stats"]
    else:
        raise BenchmarkFailedError(f"benchmark_model printed no inference time for {name}")
    if not (math.isfinite(mean_us) and mean_us >= 0):
        raise BenchmarkFailedError(f"benchmark_model printed an invalid inference time for {name}: {mean_us} us")
    both = {**(old_summary or {}), **(summary or {})}

    def ms(source: dict[str, float] | None, key: str) -> float | None:
        return source[key] * us if source is not None and key in source else None

    warmup_avg = _first_present(ms(summary, "warmup (avg)"), ms(old_summary, "warmup"), ms(warmup, "avg"))
    return ToolRun(
        mean_ms=mean_us * us,
        std_ms=ms(timed, "std"),
        count=_count(timed["count"]) if timed is not None else None,
        min_ms=ms(timed, "min"),
        max_ms=ms(timed, "max"),
        median_ms=ms(timed, "median"),
        p5_ms=ms(timed, "p5"),
        p95_ms=ms(timed, "p95"),
        first_ms=_first_present(
            ms(both, "first inference"), ms(warmup, "first"), ms(warmup, "curr"), ms(timed, "first")
        ),
        init_ms=ms(both, "init"),
        warmup_ms=warmup_avg,
        warmup_count=_count(warmup["count"]) if warmup is not None else None,
        model=model or (name if name != "the model" else None),
        ops=_op_table(lines),
    )
