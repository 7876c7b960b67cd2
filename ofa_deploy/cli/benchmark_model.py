"""``ofa-deploy benchmark --model FILE``: time any model file on a backend, as trtexec and benchmark_app do."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("ofa_deploy.cli")

DEFAULT_WARMUP, DEFAULT_RUNS = 10, 100
PROFILED_RUNS = 20  # runs timed with the operator profiler on (a separate session: it slows what it watches)
TOP_OPERATORS = 10
BACKEND_FOR_SUFFIX = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "tflite"}


def run_model(args: argparse.Namespace) -> int:
    """Open every ``--model`` on the backend named (or the one the first one's suffix suggests), time
    them (interleaved, when several), print the statistics."""
    from ofa_deploy.backend.interface import AnalyticalBackend, ModelFileRunner
    from ofa_deploy.backend.model_file import parse_shapes, time_sessions
    from ofa_deploy.backend.registry import backend_class
    from ofa_deploy.cli.common import make_backend, resolve_profile, warn_if_busy
    from ofa_deploy.errors import BadInputError
    from ofa_deploy.graph.op_names import read_op_keys

    paths = [_model_file(Path(m)) for m in args.model]
    shapes = parse_shapes(args.shape)
    if not args.backend and not args.device:
        args.backend = BACKEND_FOR_SUFFIX.get(paths[0].suffix.lower())
        if args.backend is None:
            raise BadInputError(f"{paths[0]}: give --backend (no backend is implied by the suffix '{paths[0].suffix}')")
    profile = resolve_profile(args)
    name = profile.backend if profile is not None else args.backend
    if issubclass(backend_class(name), AnalyticalBackend):
        if len(paths) > 1:
            raise BadInputError(f"backend '{name}' is a cost model: estimate one --model at a time")
        return _estimate(args, paths[0])
    with make_backend(args, profile) as backend:
        if not isinstance(backend, ModelFileRunner):
            runners = ", ".join(n for n, cls in _runners().items())
            raise BadInputError(f"backend '{name}' cannot benchmark model files yet (--model runs on: {runners})")
        op_keys = {}  # path -> the LUT keys of a network this toolkit wrote (read once: a model can be large)
        for path in paths:
            if path.suffix.lower() not in backend.model_suffixes:
                kinds = ", ".join(backend.model_suffixes)
                raise BadInputError(f"{path}: backend '{name}' runs {kinds} files, not '{path.suffix}'")
            if args.op_profile and path.suffix.lower() == ".onnx":
                op_keys[path] = read_op_keys(path)
            if args.lut and not op_keys.get(path):
                raise BadInputError(f"{path} was not written by ofa-deploy: its operators cannot be set against --lut")
        if args.op_profile and not backend.operator_profiler:
            raise BadInputError(f"backend '{name}' has no operator profiler for --op-profile")
        runtime = backend.check()
        sessions = []
        try:
            for path in paths:
                sessions.append(backend.open_model_file(path, shapes))
            _check_shapes_named(paths, sessions, shapes)
            for session in sessions:
                session.run()  # the first inference (a warm-up run): a model that cannot run fails here, alone
            warn_if_busy(backend)
            timed = time_sessions(sessions, max(args.warmup - 1, 0), args.runs)
        finally:
            for session in sessions:
                session.close()
        timed = [dataclasses.replace(stats, warmup_runs=max(args.warmup, 1)) for stats in timed]
        operators = [None] * len(paths)
        if args.op_profile:
            for i, path in enumerate(paths):
                where = Path(args.op_profile) if len(paths) == 1 else Path(args.op_profile) / f"{i + 1}-{path.stem}"
                operators[i] = _operator_profile(backend, path, shapes, args, where, op_keys.get(path))
    models = []
    for path, session, stats, ops in zip(paths, sessions, timed, operators):
        model: dict[str, Any] = {
            "model": str(path),
            "inputs": {k: list(v) for k, v in session.inputs.items()},
            "statistics": stats.to_dict(),
        }
        if ops is not None:
            model["operator_profile"] = ops
        models.append(model)
        if stats.noisy:
            log.warning(
                "warning: %s: the runs vary by %.0f%% (coefficient of variation): the machine is busy or its "
                "clocks move; compare medians, or pin the run to an idle core",
                path.name,
                100 * stats.cv,
            )
    target = {
        "backend": name,
        "device": profile.name if profile is not None and args.device else None,
        "runtime": {"runtime": runtime["runtime"], "runtime_version": runtime["runtime_version"]},
        "threads": backend.timing.threads,
        "conditions": backend.conditions(),
    }
    if len(models) == 1:
        result = {**models[0], **target}
        _print(args, result)
    else:
        result = {**target, "interleaved": True, "models": models}
        _print_comparison(args, result)
    return 0


def _check_shapes_named(paths: list[Path], sessions: list, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every ``--shape`` names an input of the model (of one of the models, when several are compared)."""
    from ofa_deploy.errors import BadInputError

    names = [name for session in sessions for name in session.inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown and len(paths) == 1:
        raise BadInputError(f"{paths[0]} has no input '{unknown[0]}' (its inputs: {', '.join(names)})")
    if unknown:
        raise BadInputError(f"--shape {unknown[0]}: none of the models has an input of that name")


def _model_file(path: Path) -> Path:
    """``--model``'s file: the file itself, or for a bundle directory its (verified) artifact."""
    from ofa_deploy.deploy.bundle import open_bundle
    from ofa_deploy.inputs import MODEL_FILE_LIMIT, open_input

    if path.is_dir():
        manifest = open_bundle(path)  # checksums verified: a tampered bundle is refused here
        return path / manifest.artifact.main
    with open_input(path, "model", MODEL_FILE_LIMIT):  # a regular, readable file: checked before any runtime
        pass
    return path


def _runners() -> dict[str, type]:
    from ofa_deploy.backend.interface import ModelFileRunner
    from ofa_deploy.backend.registry import loadable_backends

    return {n: cls for n, cls in loadable_backends().items() if issubclass(cls, ModelFileRunner)}


def _operator_profile(
    backend, path: Path, shapes, args: argparse.Namespace, where: Path, keys: list[str] | None
) -> dict[str, Any]:
    """A second session with the runtime's profiler on; its files in ``--op-profile DIR``. For a network
    this toolkit wrote (its LUT ``keys``), the nodes are also charged to them (and set against ``--lut``)."""
    from ofa_deploy.backend.model_file import time_session
    from ofa_deploy.reports.operator_profile import operator_rows, write_operator_profile

    session = backend.open_model_file(path, shapes, op_profile=True)
    try:
        time_session(session, min(args.warmup, 3), PROFILED_RUNS)
        ops = session.operator_times() or []
        height = next(iter(session.inputs.values()))[2]  # NCHW: the image resolution
    finally:
        session.close()
    per_operator = _per_lut_operator(keys, ops, height, args.lut) if keys else None
    title = f"{path.name} on {backend.name}, {backend.timing.threads} thread(s)"
    paths = write_operator_profile(ops, where, title, per_operator)
    return {
        "profiler": backend.operator_profiler,
        "runs": PROFILED_RUNS,
        "operators": len(ops),
        "total_ms": sum(op.avg_ms for op in ops),
        "top": operator_rows(ops[:TOP_OPERATORS]),
        "per_lut_operator": per_operator,
        "files": {k: str(v) for k, v in paths.items()},
    }


def _per_lut_operator(keys: list[str], ops, resolution: int, lut: str | None) -> dict[str, Any]:
    """The profile charged to the network's LUT operators ``keys`` (stem, each block, head), with
    ``lut``'s entries."""
    from ofa_deploy.graph.op_names import charge_to_operators, describe_key
    from ofa_deploy.latency.table import load_lut

    shares, unmapped, unmapped_nodes = charge_to_operators(keys, [(op.name, op.avg_ms) for op in ops])
    table = load_lut(lut) if lut else None
    rows = []
    for share in shares:
        entry = table.value(resolution, share.key) if table is not None and table.has(resolution, share.key) else None
        rows.append(
            {
                "index": share.index,
                "operator": describe_key(share.key),
                "key": share.key,
                "profiled_ms": share.profiled_ms,
                "nodes": share.nodes,
                "lut_ms": entry,
                "profiled_over_lut": share.profiled_ms / entry if entry else None,
            }
        )
    return {
        "resolution": resolution,
        "lut": lut,
        "operators": rows,
        "unmapped_ms": unmapped,
        "unmapped_nodes": unmapped_nodes,
    }


def _estimate(args: argparse.Namespace, path: Path) -> int:
    """A cost model times nothing: ``benchmark --model`` on it is ``estimate --model``."""
    from ofa_deploy.cli import estimate

    log.info("backend is a cost model: estimating %s instead of timing it (ofa-deploy estimate)", path)
    argv = ["estimate", "--model", str(path)]
    argv += ["--device", args.device] if args.device else ["--backend", args.backend]
    parser = argparse.ArgumentParser(prog="ofa-deploy")
    estimate.add_parser(parser.add_subparsers())
    routed = parser.parse_args([*argv, *(["--json"] if args.json else [])])
    return routed.run(routed)


def _print(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from ofa_deploy.cli.output import format_table, print_json

    if args.json:
        print_json(result)
        return
    s = result["statistics"]
    inputs = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result["inputs"].items())
    runtime = f"{result['runtime']['runtime']} {result['runtime']['runtime_version']}"
    print(f"{result['model']} on {result['backend']} ({runtime}, {result['threads']} thread(s)); input {inputs}")
    print(f"warm-up {s['warmup_runs']} runs, then {s['runs']} timed runs one at a time")
    rows = [[name, f"{s[name]:.3f}"] for name in ("min", "mean", "median", "p90", "p99", "max", "std")]
    rows += [["cv", f"{100 * s['cv']:.1f}%"], ["throughput", f"{s['throughput_per_s']:.1f} inferences/s"]]
    print(format_table(["latency (ms)", "value"], rows))
    profile = result.get("operator_profile")
    if profile:
        top = [
            [op["name"][:48], op["node_type"], f"{op['mean_ms']:.3f}", f"{op['percent']:.1f}%"] for op in profile["top"]
        ]
        print(
            f"\nslowest operators ({profile['operators']} in all, {profile['total_ms']:.3f} ms per inference "
            f"over {profile['runs']} profiled runs, {profile['profiler']}):"
        )
        print(format_table(["operator", "type", "mean ms", "share"], top))
        per = profile.get("per_lut_operator")
        if per:
            print(f"\nper LUT operator (in-network profiled time{' against ' + per['lut'] if per['lut'] else ''}):")
            rows = [[r["index"], r["operator"], f"{r['profiled_ms']:.3f}"] for r in per["operators"]]
            headers = ["#", "operator", "profiled ms"]
            if per["lut"]:
                headers += ["LUT ms", "profiled/LUT"]
                for row, r in zip(rows, per["operators"]):
                    row += [
                        "" if r["lut_ms"] is None else f"{r['lut_ms']:.3f}",
                        "" if r["profiled_over_lut"] is None else f"{r['profiled_over_lut']:.2f}",
                    ]
            print(format_table(headers, rows))
            print(
                f"nodes no operator claims (layout changes and the like): {per['unmapped_nodes']}, "
                f"{per['unmapped_ms']:.3f} ms"
            )
        print(f"wrote {profile['files']['json']}, {profile['files']['plot']}")


def _print_comparison(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Several models on one target, timed in the same interleaved runs: one row each, against the first."""
    from ofa_deploy.cli.output import format_table, print_json

    if args.json:
        print_json(result)
        return
    runtime = f"{result['runtime']['runtime']} {result['runtime']['runtime_version']}"
    first = result["models"][0]["statistics"]
    print(
        f"{len(result['models'])} models on {result['backend']} ({runtime}, {result['threads']} thread(s)), "
        f"timed in the same {first['runs']} interleaved rounds after {first['warmup_runs']} warm-up runs each"
    )
    rows = []
    for model in result["models"]:
        s = model["statistics"]
        rows.append(
            [
                model["model"] if len(model["model"]) <= 40 else "..." + model["model"][-37:],
                "x".join(map(str, next(iter(model["inputs"].values())))),
                f"{s['median']:.3f}",
                f"{s['mean']:.3f}",
                f"{s['p90']:.3f}",
                f"{s['p99']:.3f}",
                f"{100 * s['cv']:.1f}%",
                f"{s['throughput_per_s']:.1f}",
                f"{s['median'] / first['median']:.2f}",
            ]
        )
    headers = ["model", "input", "median ms", "mean", "p90", "p99", "cv", "inferences/s", "vs first"]
    print(format_table(headers, rows))
    for model in result["models"]:
        if "operator_profile" in model:
            print(f"{model['model']}: operator profile in {model['operator_profile']['files']['json']}")
