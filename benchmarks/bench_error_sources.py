"""Where the LUT's error comes from: per-operator time inside a network vs the same operator alone.

    python benchmarks/bench_error_sources.py [--runtime openvino|onnxruntime] [--networks 8] [--runs 40]

For each sampled sub-network (r = 160 and 224) the whole network and each of its operators alone
are compiled with the runtime's per-layer profiler on (OpenVINO ``PERF_COUNT``, ONNX Runtime's
profiler) and timed (median of --runs after warm-up). Reported per network:

* ``e2e``: wall-clock median of the whole network (timed with the profiler off); ``sum ops``: the
  sum of each operator's own wall-clock median (what a LUT sums, before its per-call overhead is taken out);
* ``perf e2e`` / ``perf ops``: the same two, from the runtime's per-layer counters (kernel time
  only: no Python, no call overhead);
* ``layout``: in-network time of layers the runtime inserted (reorders, conversions) that belong
  to no operator of ours; ``unattributed ops``: isolated-run time of such layers.

Then, per operator kind and per layer role (``se_expand``, ``depthwise_conv`` ...), in-network vs
isolated kernel time: a ratio far from 1 is an interaction (fusion, cache, layout) that no
per-operator LUT can express, while a gap between wall-clock and counter sums is measurement
protocol (call overhead, timing noise).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import OUT, machine, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.graph.ir import build_graph
from ofa_deploy.graph.onnx_writer import to_onnx_bytes
from ofa_deploy.space.arch import sample_arch
from ofa_deploy.space.ops import BLOCK, OpSpec, arch_ops

TAG = re.compile(r"([a-z]+(?:_[12])?)_(\d+)")


def openvino_layers(graph, threads: int, runs: int) -> tuple[float, dict[str, float]]:
    """Wall-clock median (ms) and per-layer median kernel time (ms) by executed layer, OpenVINO PERF_COUNT."""
    import openvino as ov

    _, layers = timed(compile_counted(ov, graph, threads, perf_count=True), runs, counted=True)
    wall, _ = timed(compile_counted(ov, graph, threads, perf_count=False), runs, counted=False)
    return wall, layers


def onnxruntime_layers(graph, threads: int, runs: int) -> tuple[float, dict[str, float]]:
    """The same from ONNX Runtime's profiler (node events ``<name>_kernel_time``; nodes named after our tensors)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(to_onnx_bytes(graph))
    for i, node in enumerate(model.graph.node):  # unique names that carry our tensor tags
        node.name = f"{node.output[0] if TAG.search(node.output[0]) else node.input[0]}#{i}"

    def session(profiling: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = profiling
        options.profile_file_prefix = str(OUT / "ort_profile")
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    feed = {"input": np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)}
    plain, profiled = session(False), session(True)
    for _ in range(5):
        plain.run(None, feed)
    wall = []
    for _ in range(runs):
        start = time.perf_counter()
        plain.run(None, feed)
        wall.append((time.perf_counter() - start) * 1e3)
    for _ in range(runs + 5):
        profiled.run(None, feed)
    trace = Path(profiled.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    layers = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            layers[f"{name}|{event.get('args', {}).get('op_name', '')}"].append(event["dur"] / 1e3)
    # warm-up runs are in the trace too: keep the last ``runs`` of each node
    return float(np.median(wall)), {name: float(np.median(v[-runs:])) for name, v in layers.items()}


RUNTIMES = {"openvino": openvino_layers, "onnxruntime": onnxruntime_layers}


def compile_counted(ov, graph, threads: int, perf_count: bool):
    core = ov.Core()
    model = core.read_model(to_onnx_bytes(graph), b"")
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERF_COUNT": perf_count,
    }
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.random.default_rng(0).standard_normal(graph.input_shape, dtype=np.float32)))
    return request


def timed(request, runs: int, counted: bool) -> tuple[float, dict[str, float]]:
    """Wall-clock median (ms) and per-layer median kernel time (ms) by executed layer name."""
    for _ in range(5):
        request.infer()
    wall, layers = [], defaultdict(list)
    for _ in range(runs):
        start = time.perf_counter()
        request.infer()
        wall.append((time.perf_counter() - start) * 1e3)
        for info in request.get_profiling_info() if counted else ():
            if info.status.name == "EXECUTED":
                layers[f"{info.node_name}|{info.exec_type}"].append(info.real_time.total_seconds() * 1e3)
    return float(np.median(wall)), {name: float(np.median(v)) for name, v in layers.items()}


def node_owner(graph, ops: list[OpSpec]) -> dict[str, int]:
    """Our tensor tag (``depthwise_13`` ...) -> index of the operator that produced it."""
    owners, n_node = {}, 0
    for index, op in enumerate(ops):
        count = len(build_graph([op]).nodes)
        for node in graph.nodes[n_node : n_node + count]:
            owners[node.output] = index
        n_node += count
    return owners


def attribute(
    layers: dict[str, float], owners: dict[str, int], roles: dict[tuple[int, str], float] | None = None
) -> tuple[dict[int, float], float]:
    """Layer times summed per operator; the rest (reorders, conversions) as one figure. ``roles``, if
    given, also collects (operator, layer role) -> ms, the role being e.g. ``se_expand`` or ``depthwise_conv``."""
    per_op, rest = defaultdict(float), 0.0
    for name, ms in layers.items():
        node, exec_type = name.split("|")
        tags = [m for m in TAG.finditer(node) if m.group(0) in owners]
        if tags and "reorder" not in exec_type.lower():
            per_op[owners[tags[-1].group(0)]] += ms
            if roles is not None:
                role = tags[-1].group(1) + node[tags[-1].end() :].split("/")[0].split("#")[0].replace("_nchwc", "")
                roles[(owners[tags[-1].group(0)], role)] = roles.get((owners[tags[-1].group(0)], role), 0.0) + ms
        else:
            rest += ms
    return per_op, rest


def op_kind(op: OpSpec) -> str:
    if op.kind != BLOCK:
        return op.kind
    return f"block k{op.kernel} s{op.stride}{' se' if op.se else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="openvino")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    layers_of = RUNTIMES[args.runtime]

    rng = np.random.default_rng(args.seed)
    rows, ratios, record = [], defaultdict(list), []
    role_totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # role -> [in network, alone]
    for n in range(args.networks):
        arch = sample_arch(rng, resolutions=(160, 224) if n % 2 == 0 else (224,))
        ops = arch_ops(arch, 1.0)
        graph = build_graph(ops)
        e2e_wall, e2e_layers = layers_of(graph, args.threads, args.runs)
        network_roles: dict[tuple[int, str], float] = {}
        in_network, layout = attribute(e2e_layers, node_owner(graph, ops), network_roles)
        alone_wall, alone_perf, alone_rest = [], [], 0.0
        for index, op in enumerate(ops):
            single = build_graph([op])
            wall, layers = layers_of(single, args.threads, args.runs)
            alone_roles: dict[tuple[int, str], float] = {}
            mine, rest = attribute(layers, node_owner(single, [op]), alone_roles)
            for (_, role), ms in alone_roles.items():
                role_totals[role][1] += ms
                role_totals[role][0] += network_roles.get((index, role), 0.0)
            alone_wall.append(wall)
            alone_perf.append(mine.get(0, 0.0))
            alone_rest += rest
            if alone_perf[-1] > 0.005:
                ratios[op_kind(op)].append(in_network.get(index, 0.0) / alone_perf[-1])
        perf_e2e = sum(e2e_layers.values())
        row = {
            "arch": arch.to_dict(),
            "e2e_ms": e2e_wall,
            "sum_ops_ms": sum(alone_wall),
            "perf_e2e_ms": perf_e2e,
            "perf_ops_ms": sum(alone_perf),
            "layout_ms": layout,
            "unattributed_ops_ms": alone_rest,
        }
        record.append(row)
        rows.append(
            [
                n,
                arch.r,
                f"{e2e_wall:.2f}",
                f"{sum(alone_wall):.2f}",
                f"{perf_e2e:.2f}",
                f"{sum(alone_perf):.2f}",
                f"{layout:.2f}",
                f"{alone_rest:.2f}",
            ]
        )
        print(f"network {n}: e2e {e2e_wall:.2f} ms, ops alone {sum(alone_wall):.2f} ms", file=sys.stderr)
    summary = {k: {"median": float(np.median(v)), "n": len(v)} for k, v in sorted(ratios.items())}
    (OUT / f"error_sources-{args.runtime}.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "networks": record,
                "in_network_over_isolated": summary,
                "layer_roles_ms": {k: {"in_network": a, "alone": b} for k, (a, b) in role_totals.items()},
            },
            indent=1,
        )
    )
    print(f"\n{args.runtime}, {args.threads} thread(s), median of {args.runs} runs ({machine()}); all figures ms")
    print_table(["net", "r", "e2e", "sum ops", "perf e2e", "perf ops", "layout", "unattributed ops"], rows)
    print("\nIn-network / isolated kernel time per operator kind (runtime profiler, median over occurrences):")
    print_table(["operator", "ratio", "n"], [[k, f"{v['median']:.2f}", v["n"]] for k, v in summary.items()])
    print("\nPer layer role inside the operators (all occurrences): total ms in network vs alone")
    print_table(
        ["layer role", "in network", "alone", "ratio"],
        [[k, f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}" if b else "-"] for k, (a, b) in sorted(role_totals.items())],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
