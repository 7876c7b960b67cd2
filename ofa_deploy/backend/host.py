"""A one-line description of the machine, recorded with benchmark figures and reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_host() -> str:
    """This machine in one line: CPU model, core count, OS and architecture, Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def busy_warning() -> str | None:
    """A warning when other processes already keep the CPUs busy: timings then measure the
    scheduler more than the model (seen here: a calibration slope of 2.3 instead of 1.1)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if load > cores - 0.5:
        return (
            f"the machine is busy (load average {load:.1f} on {cores} cores): latency measurements will be "
            "noisy and biased; stop other jobs or pin this one to an idle core"
        )
    return None
