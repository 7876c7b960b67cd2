"""The fake phone's filesystem: a temporary directory standing in for ``/``.

Device paths under /data, /sys, /proc and /sdcard map into it; ``getprop``, ``taskset`` and the
CPU frequency files answer with plausible values of a Snapdragon 835 phone (Pixel 2).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

MAPPED = ("data", "sys", "proc", "sdcard")
_DEVICE_PATH = re.compile(r"(?<![\w./-])/(" + "|".join(MAPPED) + r")(?=/|\b)")
PROPERTIES = {
    "ro.product.manufacturer": "Google",
    "ro.product.model": "Pixel 2 (loopback)",
    "ro.product.device": "walleye",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "11",
    "ro.build.version.sdk": "30",
    "ro.board.platform": "msm8998",
}
CORES = 8


class FakeRoot:
    """Creates the tree and maps device paths into it."""

    def __init__(self, root: Path, governor: str = "performance", cur_freq_khz: int = 2457600) -> None:
        self.root = root
        (root / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "sdcard").mkdir(exist_ok=True)
        self.bin = root / "system" / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.taskset_log = root / "taskset.log"
        for cpu in range(CORES):
            freq = root / "sys" / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            (freq / "scaling_governor").write_text(governor + "\n")
        (root / "sys" / "devices" / "system" / "cpu" / "possible").write_text(f"0-{CORES - 1}\n")
        self.set_frequency(cur_freq_khz)
        self._write_tools()

    def set_frequency(self, khz: int) -> None:
        for cpu in range(CORES):
            path = self.root / "sys" / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq"
            path.write_text(f"{khz}\n")

    def _write_tools(self) -> None:
        cases = "\n".join(f"  {shlex.quote(k)}) echo {shlex.quote(v)} ;;" for k, v in PROPERTIES.items())
        listing = "\n".join(f"  echo {shlex.quote(f'[{k}]: [{v}]')}" for k, v in PROPERTIES.items())
        self._tool(
            "getprop", f'if [ $# -eq 0 ]; then\n{listing}\n  exit 0\nfi\ncase "$1" in\n{cases}\n  *) echo ;;\nesac\n'
        )
        log = shlex.quote(str(self.taskset_log))
        self._tool(
            "taskset",
            'case "$1" in\n  *[!0-9a-fA-Fx]*|"") echo "taskset: bad mask $1" >&2; exit 1 ;;\nesac\n'
            f'echo "$1" >> {log}\nshift\nexec "$@"\n',
        )

    def _tool(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def host_path(self, device_path: str) -> Path:
        """Where a device path lives here; refuses paths that would leave the root."""
        parts = [p for p in device_path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise PermissionError(f"{device_path}: '..' is not allowed")
        return self.root.joinpath(*parts)

    def rewrite_command(self, command: str) -> str:
        """The shell command with device paths pointed into the fake root (the rest untouched)."""
        return _DEVICE_PATH.sub(lambda m: f"{self.root}/{m.group(1)}", command)
