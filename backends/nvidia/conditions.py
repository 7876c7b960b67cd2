"""The GPU's operating conditions (clocks, temperature, power) through NVML, and whether they held.

GPU latency follows the SM clock, which boosts, throttles on temperature or power, and drops when
the GPU idles. A latency table records the conditions before and after it was measured; when the
SM or memory clock moved by more than 5% in between (the stability threshold trtexec uses), the
figures mix clock regimes and a warning says so. NVML comes from ``nvidia-ml-py`` (module
``pynvml``); without it the conditions are recorded as unknown, never guessed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

CLOCK_DRIFT_WARNING = 0.05
CLOCK_FIELDS = ("sm_clock_mhz", "memory_clock_mhz")
log = logging.getLogger(__name__)


def _nvml():
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver, driver/library mismatch
        return None
    return pynvml


def read_conditions(index: int) -> dict[str, Any]:
    """The conditions of GPU ``index`` now; ``{"available": False, "reason": ...}`` without NVML."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    nvml = _nvml()
    if nvml is None:
        return {"time": now, "available": False, "reason": "NVML not available (pip install nvidia-ml-py)"}
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        out: dict[str, Any] = {
            "time": now,
            "available": True,
            "driver_version": _text(nvml.nvmlSystemGetDriverVersion()),
            "sm_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "memory_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM),
            "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "performance_state": f"P{nvml.nvmlDeviceGetPerformanceState(handle)}",
        }
        try:
            out["power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except nvml.NVMLError:  # not supported on some boards
            out["power_w"] = None
        return out
    except nvml.NVMLError as exc:
        return {"time": now, "available": False, "reason": f"NVML error: {exc}"}
    finally:
        nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def clock_change(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """The largest relative change of the SM and memory clocks (0.07 = 7%); None when unknown."""
    changes = []
    for name in CLOCK_FIELDS:
        a, b = before.get(name), after.get(name)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0:
            changes.append(abs(b - a) / a)
    return max(changes) if changes else None


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The record kept in LUTs and benchmark results: both snapshots, the clock change, and a
    warning (also logged) when the clocks moved more than 5%."""
    change = clock_change(before, after)
    record: dict[str, Any] = {"before": before, "after": after, "clock_change": change}
    if change is not None and change > CLOCK_DRIFT_WARNING:
        record["warning"] = (
            f"GPU clocks moved by {100 * change:.0f}% during the measurement "
            f"(SM {before.get('sm_clock_mhz')} -> {after.get('sm_clock_mhz')} MHz, "
            f"{before.get('temperature_c')} -> {after.get('temperature_c')} C): figures mix clock regimes; "
            "lock the clocks (nvidia-smi -lgc) or let the GPU reach a steady state, then measure again"
        )
        log.warning("warning: %s", record["warning"])
    return record
