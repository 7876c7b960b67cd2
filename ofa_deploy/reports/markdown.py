"""The demo's report: one Markdown page with the measured-vs-predicted plot, the Pareto front and
a table of the bundles (Markdown renders on GitHub, in editors and as plain text)."""

from __future__ import annotations

from pathlib import Path

from ofa_deploy.files import atomic_write_text
from ofa_deploy.reports.demo import DemoResult


def _pct(x: float) -> str:
    return f"{x:.0%}"


def render_markdown(result: DemoResult) -> str:
    """The demo report as Markdown text."""
    f, opts = result.facts, result.options
    v = f["validation"]
    lines = [
        "# ofa-deploy demo report",
        "",
        f"Target: **{f['device']}** ({f['backend']}, {f['runtime']}, {f['threads']} thread(s)), "
        f"OFA MobileNetV3 w{f['width_mult']}, resolutions {list(opts.resolutions)}; "
        f"{f['machine']}; ofa-deploy {f['toolkit']}.",
        "",
        "## 1. Latency table",
        "",
        f"{f['lut_keys']} distinct operators, {'reused from the cache' if f['lut_reused'] else 'profiled now'}: "
        f"`{Path(f['lut']).name}`. The reference operator's raw latency moved by {100 * (f['drift'] - 1):.0f}% "
        "while profiling (machine load); entries are normalised by it.",
        "",
        "## 2. Measured vs predicted",
        "",
        f"{v['samples']} random sub-networks measured end to end; half fit the calibration "
        f"(measured = {v['calibration']['slope']:.3f} x LUT sum {v['calibration']['intercept']:+.3f} ms), "
        f"figures are on the {v['held_out']} held out.",
        "",
        "| | RMSE (ms) | MAPE | Kendall tau | within ±5% | within ±10% |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in (("LUT sum", "before"), ("calibrated", "after")):
        m = v[key]
        lines.append(
            f"| {name} | {m['rmse_ms']:.3f} | {m['mape']:.1%} | {m['kendall_tau']:.3f} | "
            f"{_pct(m['acc5'])} | {_pct(m['acc10'])} |"
        )
    lines += ["", f"![measured vs predicted]({f['scatter']})", "", "## 3. Search", ""]
    if f["proxy"]:
        lines.append(
            "No accuracy predictor was given (`--accuracy-predictor`), so the search **maximised FLOPs "
            "as a proxy for accuracy**; the scores below are MFLOPs, not accuracy."
        )
    else:
        lines.append(f"Objective: {f['objective']}.")
    lines += [
        "",
        f"Pareto front: {f['front_size']} sub-networks, found in {f['front_seconds']:.1f} s.",
        "",
        f"![Pareto front]({f['pareto']})",
        "",
        "## 4. Bundles: measured vs predicted",
        "",
        "| budget (ms) | sub-network | "
        + ("MFLOPs (proxy score)" if f["proxy"] else "predicted top-1")
        + " | params (M) | predicted (ms) | measured (ms) | error | artifact vs torch | bundle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in result.bundles:
        score = f"{b['score']:.1f}" if f["proxy"] else f"{b['score']:.2%}"
        arch = b["arch"].replace(" | ", " / ")  # a '|' would end the Markdown table cell
        lines.append(
            f"| {b['budget_ms']:g} | `{arch}` | {score} | {b['params_m']:.2f} | {b['predicted_ms']:.3f} | "
            f"{b['measured_ms']:.3f} | {b['error_percent']:+.1f}% | {b['max_abs_diff']:.1e} | `{b['path']}` |"
        )
    weights = {b["weights"] for b in result.bundles}
    lines += [
        "",
        "Measured = median of round minima, normalised by the table's reference operator (the same protocol as "
        "the table); raw medians are in each bundle's `manifest.json`.",
        "",
        "Weights: "
        + (
            "random (no `--supernet` given): right for latency, not for accuracy."
            if weights == {"random"}
            else "from the supernet checkpoint."
        ),
        "",
        "## Timings",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in result.steps],
        "",
    ]
    return "\n".join(lines)


def write_report(result: DemoResult) -> Path:
    """Write the demo report to ``report.md`` in the demo's output folder; returns its path."""
    path = result.options.out / "report.md"
    atomic_write_text(path, render_markdown(result))
    return path
