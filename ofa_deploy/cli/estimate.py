"""``ofa-deploy estimate``: latency of any ONNX CNN from an analytical backend, layer by layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from ofa_deploy.cli.common import add_target_args, checked

TOP_LAYERS = 12
# where the time goes: each layer's ms by what bounds it, then the fixed cost of a call
PARTS = {
    "compute": "compute-bound layers",
    "memory": "memory-bound layers",
    "overhead": "overhead-bound layers",
    "cpu": "CPU fall-back",
    "call": "per-call overhead",
}
# what moves each part when the backend offers no estimated alternative
HINTS = {
    "compute": (
        "a larger DPU or a higher clock (--sweep-dpu compares the sizes; more cores add throughput, "
        "not batch-1 latency)"
    ),
    "memory": "the board's DDR bandwidth, or smaller feature maps",
    "overhead": "fewer, larger layers (each DPU layer has a fixed cost that small ones cannot hide)",
    "cpu": "operators the DPU runs instead of the CPU fall-backs listed",
    "call": "several frames per call",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy estimate`` and its flags."""
    p = subparsers.add_parser("estimate", help="estimate the latency of an ONNX model on an analytical target (fpga)")
    add_target_args(p)
    p.add_argument("--model", required=True, help="ONNX model (batch 1; fp32 accepted, int8 deployment assumed)")
    p.add_argument("--sweep-dpu", action="store_true", help="latency and throughput for every DPU size, 1-4 cores")
    p.add_argument("--plot", help="with --sweep-dpu: write the design-space plot to this PNG")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=checked(run))


def run(args: argparse.Namespace) -> int:
    """Estimate ``--model`` on an analytical backend: latency, slowest layers, every DPU size with ``--sweep-dpu``."""
    from ofa_deploy.backend.interface import AnalyticalBackend
    from ofa_deploy.cli.common import make_backend, resolve_profile
    from ofa_deploy.cli.output import format_table, print_json
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.graph.onnx_reader import layers_from_onnx

    device = resolve_profile(args)
    layers = layers_from_onnx(Path(args.model))
    with make_backend(args, device) as backend:
        if not isinstance(backend, AnalyticalBackend):
            raise BadInputError(
                f"backend '{backend.name}' times models on a target rather than estimating them; `estimate` needs "
                "an analytical backend (--backend fpga). To time a sub-network there: `ofa-deploy compile --arch "
                "ARCH.json` for it, then `ofa-deploy benchmark BUNDLE`"
            )
        report = backend.estimate_layers(layers)
        target = backend.check()["target"]
        document = {"model": str(args.model), "backend": backend.name, "device": device.name if device else None}
        document.update(report.to_dict())
        document["breakdown_ms"] = breakdown(document)
        document["alternatives"] = [a.to_dict() for a in backend.alternatives(layers, report)]
        sweep = _sweep(backend, layers, args) if args.sweep_dpu else None
    if sweep is not None:
        document["sweep"] = sweep
        if args.plot:
            board = f"{device.name} " if device else ""
            title = f"{Path(args.model).name} on {board}(as deployed: {target})"
            _plot(sweep, Path(args.plot), title)
    if args.json:
        print_json(document)
        return 0
    layer_rows = sorted(document["layers"], key=lambda c: -c["ms"])[:TOP_LAYERS]
    print(
        f"{args.model} on {target}: {document['latency_ms']:.3f} ms "
        f"(model {document['model']}; {document['cpu_fallback_layers']} layer(s) on the CPU)"
    )
    _print_breakdown(document)
    print(f"\nslowest {len(layer_rows)} of {len(document['layers'])} layers:")
    rows = [
        (c["name"][:40], c["source_op"] or c["op"], c["engine"], c["bound"], c["cycles"], f"{c['ms']:.4f}")
        for c in layer_rows
    ]
    print(format_table(["layer", "op", "engine", "bound", "cycles", "ms"], rows))
    if sweep is not None:
        print("\nDPU design space (latency: batch 1 on one core; throughput: one thread per core, DDR-capped):")
        rows = [(s["arch"], s["cores"], f"{s['latency_ms']:.3f}", f"{s['throughput_fps']:.1f}") for s in sweep]
        print(format_table(["arch", "cores", "latency ms", "throughput fps"], rows))
        if args.plot:
            print(f"\nwrote {args.plot}")
    return 0


def breakdown(document: dict) -> dict[str, float]:
    """Milliseconds by part (:data:`PARTS`): the layers by what bounds them, then the call's own cost."""
    parts = dict.fromkeys(PARTS, 0.0)
    for layer in document["layers"]:
        if layer["bound"] in parts:
            parts[layer["bound"]] += layer["ms"]
    parts["call"] = float(document.get("invocation_ms") or 0.0)
    return parts


def _print_breakdown(document: dict) -> None:
    from collections import Counter

    from ofa_deploy.cli.output import format_table

    total, parts = document["latency_ms"], document["breakdown_ms"]
    on_cpu = Counter(c["source_op"] or c["op"] for c in document["layers"] if c["bound"] == "cpu")
    rows = []
    for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        if ms <= 0:
            continue
        label = PARTS[part]
        if part == "cpu":
            label += " (" + ", ".join(f"{op} x{n}" for op, n in on_cpu.most_common()) + ")"
        rows.append((label, f"{ms:.3f}", f"{100 * ms / total:.0f}%"))
    print("\nwhere the time goes:")
    print(format_table(["part", "ms", "share"], rows))
    largest = max(parts, key=lambda part: parts[part])
    options = sorted(document["alternatives"], key=lambda a: a["latency_ms"])
    if options and options[0]["latency_ms"] < total:
        best = options[0]
        change = 100 * (best["latency_ms"] / total - 1)
        share = 100 * parts[best["addresses"]] / total
        print(
            f"largest lever: {best['flag']}: {total:.3f} -> {best['latency_ms']:.3f} ms ({change:+.0f}%), "
            f"{PARTS[best['addresses']]} being {share:.0f}% of the time; {best['what']}"
        )
    else:
        print(f"largest lever: {PARTS[largest]} ({100 * parts[largest] / total:.0f}%): {HINTS[largest]}")


def _sweep(backend, layers, args) -> list[dict]:
    """Every architecture the backend's model knows, 1 to 4 cores, other settings as given."""
    from ofa_deploy.backend.interface import DesignSpace
    from ofa_deploy.errors import BadInputError

    if not isinstance(backend, DesignSpace):
        raise BadInputError(f"--sweep-dpu: backend '{backend.name}' has no DPU sizes to sweep (use --backend fpga)")
    out = []
    for design, variant in backend.design_variants():
        report = variant.estimate_layers(layers)
        cores = design.get("cores", 1)
        out.append({**design, "latency_ms": report.latency_ms, "throughput_fps": report.throughput_fps(cores)})
    return out


def _plot(sweep: list[dict], path: Path, title: str) -> None:
    """Latency by size and throughput by size and cores; ``title`` names the model, the board, its
    clock and DDR (the figures hold only for them). The legend sits beside the lines, not on them."""
    from matplotlib.figure import Figure

    from ofa_deploy.files import atomic_write_figure

    archs = list(dict.fromkeys(s["arch"] for s in sweep))
    fig = Figure(figsize=(10, 4.4))
    left, right = fig.subplots(1, 2)
    latency = [next(s["latency_ms"] for s in sweep if s["arch"] == a) for a in archs]
    left.bar(archs, latency, color="tab:blue")
    left.set_ylabel("latency, batch 1 (ms)")
    left.set_title("latency by DPU size (one core)", fontsize=10)
    left.tick_params(axis="x", rotation=45)
    for cores in (1, 2, 3, 4):
        fps = [next(s["throughput_fps"] for s in sweep if s["arch"] == a and s["cores"] == cores) for a in archs]
        right.plot(archs, fps, marker="o", label=f"{cores} core(s)")
    right.set_ylabel("throughput (frames/s)")
    right.set_title("throughput by size and cores (DDR-capped)", fontsize=10)
    right.tick_params(axis="x", rotation=45)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(f"{title}\nDPUCZDX8G design space (cost model)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_figure(path, fig, dpi=110)
