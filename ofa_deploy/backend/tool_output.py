"""What a vendor benchmark tool reports for one run, as the :class:`~ofa_deploy.backend.interface.OutputParser`
role returns it: TFLite's ``benchmark_model`` today; OpenVINO's ``benchmark_app`` and ``trtexec``
print the same kinds of figures (statistics of the timed runs, warm-up, initialisation, and an
optional per-operator table)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OperatorTiming:
    """One row of a tool's per-operator profile (times in milliseconds; ``None`` where not printed)."""

    node_type: str
    name: str
    first_ms: float | None
    avg_ms: float
    percent: float | None
    times_called: int | None


@dataclass
class ToolRun:
    """One run of a benchmark tool. Times in milliseconds; ``None`` where that tool's output lacks the figure."""

    mean_ms: float
    std_ms: float | None
    count: int | None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None
    first_ms: float | None = None
    init_ms: float | None = None
    warmup_ms: float | None = None
    warmup_count: int | None = None
    model: str | None = None
    ops: list[OperatorTiming] = field(default_factory=list)
