"""What ``ofa-deploy doctor --backend nvidia`` checks: the driver and the GPU, every GPU engine
(TensorRT, onnxruntime-gpu's TensorRT and CUDA providers, a CUDA build of torch) with the one in
use named, and the GPU's clocks and temperature from NVML (steady clocks make steady figures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ofa_deploy.backend.diagnosis import Finding, Verdict, attempt
from ofa_deploy.backends.nvidia import conditions as nvidia_conditions
from ofa_deploy.backends.nvidia.gpu import select_gpu

INSTALL_DRIVER = "install the NVIDIA driver for the GPU (then `nvidia-smi` lists it)"


def diagnose(
    backend: Any, engines: Sequence[str], engine_runtime: Callable[[str], dict[str, str]], extra: str
) -> list[Finding]:
    """Driver and GPU, then each of ``engines`` (asked of ``engine_runtime``), clocks, for ``backend``
    (a NvidiaBackend); the engines are not looked at without a GPU. ``extra``: the pip extra."""
    gpu, failure = attempt("driver", lambda: select_gpu(backend.settings.device_index), INSTALL_DRIVER)
    if failure is not None:
        return [failure]
    assert gpu is not None
    said = f"CUDA {gpu.driver_cuda_version}: GPU {gpu.index} {gpu.name} (sm_{gpu.compute_capability.replace('.', '')})"
    findings = [Finding("driver", Verdict.OK, said)]
    wanted = backend.settings.engine
    usable = []
    for engine in engines:
        info, missing = attempt(f"engine {engine}", lambda engine=engine: engine_runtime(engine))
        if info is not None:
            usable.append(engine)
            findings.append(Finding(f"engine {engine}", Verdict.OK, f"{info['runtime']} {info['runtime_version']}"))
        elif missing is not None:
            needed = wanted == engine  # only the configured engine must be there; the others are choices
            findings.append(
                Finding(missing.check, Verdict.FAIL if needed else Verdict.INFO, missing.detail, missing.fix)
            )
    if wanted == "auto" and not usable:
        findings.append(
            Finding("engine", Verdict.FAIL, "no GPU engine is installed", f"pip install 'ofa-deploy[{extra}]'")
        )
    state = nvidia_conditions.read_conditions(gpu.index)
    if not state.get("available"):
        findings.append(Finding("clocks", Verdict.INFO, str(state.get("reason")), "pip install nvidia-ml-py"))
    else:
        clocks = (
            f"SM {state['sm_clock_mhz']} of {state['max_sm_clock_mhz']} MHz, {state['temperature_c']} C, "
            f"{state['performance_state']}, driver {state['driver_version']}"
        )
        findings.append(
            Finding("clocks", Verdict.INFO, clocks, "lock them for steadier figures: sudo nvidia-smi -lgc MHz")
        )
    return findings
