"""Linking TVM's object files into a shared library for the board's CPU (cross-compilation).

Two linkers are supported, chosen by the device profile's ``cross_compiler`` setting:

* ``zig`` (default for ARM boards): the ``ziglang`` wheel, ``python -m ziglang cc -target
  aarch64-linux-gnu``, a complete clang + glibc cross toolchain from pip (``ofa-deploy[jetson]``).
  It links as C: TVM's objects call the TVM runtime and libc, never the C++ library, and ``zig c++``
  would build libc++ for the board on first use (146 s instead of 64 s for the first Jetson compile
  on a machine; zig keeps what it built in ``~/.cache/zig``, later compiles take seconds);
* ``gcc``: Debian's ``aarch64-linux-gnu-g++`` (``sudo apt-get install g++-aarch64-linux-gnu``);
* ``host``: this machine's ``g++`` (for a host target, no cross-compilation).

A missing linker is one line (exit 3) saying how to install it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

from ofa_deploy.errors import TargetUnavailableError

LINKERS = ("zig", "gcc", "host")
ZIG_TARGETS = {"aarch64-linux-gnu": "aarch64-linux-gnu", "x86_64-linux-gnu": "x86_64-linux-gnu"}


def _zig_command(triple: str) -> list[str]:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        raise TargetUnavailableError(
            "cross-compiling for an ARM board needs the ziglang wheel: pip install 'ofa-deploy[jetson]' "
            "(or set the profile's cross_compiler: gcc and sudo apt-get install g++-aarch64-linux-gnu)",
            fix="pip install 'ofa-deploy[jetson]'",
        ) from None
    return [sys.executable, "-m", "ziglang", "cc", "-target", ZIG_TARGETS.get(triple, triple)]


def _gcc_command(triple: str) -> list[str]:
    name = f"{triple}-g++"
    if shutil.which(name) is None:
        package = f"g++-{triple.replace('_', '-')}"
        raise TargetUnavailableError(
            f"the cross-compiler {name} is not installed: sudo apt-get install {package} "
            "(or set the profile's cross_compiler: zig and pip install 'ofa-deploy[jetson]')",
            fix=f"sudo apt-get install {package}",
        )
    return [name]


def _host_command() -> list[str]:
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return [name]
    try:
        return _zig_command("native")[:-2]
    except TargetUnavailableError:
        raise TargetUnavailableError(
            "exporting a TVM library needs a C++ linker: install g++ (sudo apt-get install g++) "
            "or pip install 'ofa-deploy[jetson]' (ziglang)",
            fix="sudo apt-get install g++",
        ) from None


def linker_command(linker: str, triple: str | None) -> list[str]:
    """The command that links objects into a shared library for ``triple`` (None: this machine)."""
    if linker == "host" or triple is None:
        return _host_command()
    if linker == "zig":
        return _zig_command(triple)
    if linker == "gcc":
        return _gcc_command(triple)
    raise ValueError(f"unknown cross_compiler {linker!r}; choose one of {', '.join(LINKERS)}")


def shared_library_linker(linker: str, triple: str | None) -> Callable[..., None]:
    """An ``fcompile`` for TVM's ``export_library``: links the objects with the chosen toolchain."""
    command = linker_command(linker, triple)

    def link(output: str, objects: Sequence[str] | str, options: Sequence[str] | None = None, **_: object) -> None:
        files = [objects] if isinstance(objects, str) else list(objects)
        argv = [*command, "-shared", "-fPIC", "-o", output, *files, *(options or [])]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"linking {output} failed ({' '.join(command)}): {done.stderr.strip()[-800:]}")

    if triple is not None:
        link.get_target_triple = lambda: triple  # type: ignore[attr-defined]
    return link
