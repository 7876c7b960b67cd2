"""Start-up and hygiene: light verbs import no torch, the library leaves the process alone, -q is quiet."""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def _imports(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ofa_deploy", *args], capture_output=True, text=True, timeout=120
    )
    modules = {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    return run, modules


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["devices", "--json"], ["profile", "--help"]])
def test_light_verbs_do_not_import_torch(args):
    run, modules = _imports(*args)
    assert run.returncode == 0, run.stderr[-400:]
    assert "ofa_deploy.cli.main" in modules  # the measurement itself worked
    assert "torch" not in modules and "matplotlib" not in modules
    if args == ["devices", "--json"]:
        assert {"onnxruntime", "adb"} <= set(json.loads(run.stdout)["backends"])


def test_library_leaves_the_process_alone(tmp_path):
    """Writing a validation plot neither switches matplotlib's backend nor loads pyplot, and no
    library call touches os.environ."""
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np
        before = dict(os.environ)
        from ofa_deploy.latency.table import Calibration
        from ofa_deploy.latency.validation import ValidationReport, ValidationResult
        from ofa_deploy.reports.validation import plot_scatter
        from ofa_deploy.space.arch import smallest_arch
        n = 6
        result = ValidationResult(
            [smallest_arch(160)] * n, np.linspace(1, 2, n), np.linspace(1.1, 2.2, n), np.linspace(1.1, 2.2, n),
            np.zeros(n), np.arange(n) % 2 == 0, Calibration(1.1, 0.0),
            ValidationReport(
                n, "x", {{}}, "t.json", 1.0, [160], 0, n // 2, {{}},
                before={{"acc5": 0.5, "acc10": 1.0, "kendall_tau": 1.0}},
                after={{"acc5": 1.0, "acc10": 1.0, "kendall_tau": 1.0}},
                all_before={{}}, normalised_by_reference=False, raw_after={{}}, target={{}},
                target_mismatch_allowed=[],
            ),
        )
        plot_scatter(result, {str(tmp_path / "scatter.png")!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot loaded"
        assert dict(os.environ) == before, "environment changed"
        print("ok")
        """
    )
    env = {**os.environ, "MPLBACKEND": ""}
    env.pop("MPLBACKEND")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-600:]
    assert (tmp_path / "scatter.png").stat().st_size > 10_000
