"""Reading input files safely: regular files only, bounded sizes, lines streamed.

Every file a verb reads (``--lut``, ``--arch``, ``--archs``, ``--measurements``, ``--model``...) goes
through here. A FIFO, a device (``/dev/zero``), a socket or a directory where a file is expected is
refused before anything is read, so nothing can hang or fill the memory; a file above its kind's
size limit is refused too. Each refusal is one :class:`~ofa_deploy.errors.BadInputError` (exit 2)
naming the file. JSON Lines files are read one line at a time, with a limit per line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ofa_deploy.errors import BadInputError

MiB = 1 << 20
ARCH_FILE_LIMIT = 1 * MiB  # one Arch JSON object
LUT_FILE_LIMIT = 64 * MiB  # a toolkit LUT of every resolution is about 1 MiB
LINES_FILE_LIMIT = 256 * MiB  # --archs / --measurements (JSON Lines: streamed)
LINE_LIMIT = 64 * 1024  # one Arch (plus a few measurement fields) is about 300 bytes
MODEL_FILE_LIMIT = 2048 * MiB  # protobuf's own limit for one ONNX message

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _size_text(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"


def _too_large(path: Path, what: str, limit: int, size: int | None = None) -> BadInputError:
    found = f" ({_size_text(size)})" if size is not None else ""
    return BadInputError(f"{path}: too large for {what}{found}; the limit is {_size_text(limit)}")


@contextmanager
def open_input(path: str | Path, what: str, limit: int) -> Iterator[BinaryIO]:
    """``path`` opened for reading in binary, after checking it is a regular file of at most ``limit``
    bytes. Opening never blocks (O_NONBLOCK: a FIFO without a writer is refused, not waited on)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        kind = next((name for test, name in _KINDS if test(info.st_mode)), None)
        if kind is not None or not stat.S_ISREG(info.st_mode):
            found = f"{kind}, not a regular file" if kind else "not a regular file"
            raise BadInputError(f"{path}: cannot read {what}: it is {found}")
        if info.st_size > limit:
            raise _too_large(path, what, limit, info.st_size)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_input_bytes(path: str | Path, what: str, limit: int) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (a file that grows past it is refused)."""
    with open_input(path, what, limit) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise BadInputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise _too_large(Path(path), what, limit)
    return data


def read_input_text(path: str | Path, what: str, limit: int) -> str:
    """:func:`read_input_bytes` decoded as UTF-8."""
    data = read_input_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: cannot read {what} (not UTF-8 text at byte {exc.start})") from None


def input_lines(
    path: str | Path, what: str, limit: int = LINES_FILE_LIMIT, line_limit: int = LINE_LIMIT
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for every line of a regular text file, read one line at a time: memory
    stays one line, whatever the file's size. A line above ``line_limit`` bytes is refused naming it."""
    total = 0
    with open_input(path, what, limit) as f:
        number = 0
        while True:
            try:
                raw = f.readline(line_limit + 1)
            except OSError as exc:
                raise BadInputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
            if not raw:
                return
            number += 1
            total += len(raw)
            if total > limit:
                raise _too_large(Path(path), what, limit)
            if len(raw) > line_limit and not raw.endswith(b"\n"):
                raise BadInputError(f"{path}:{number}: line longer than {_size_text(line_limit)}; one object per line")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInputError(f"{path}:{number}: not UTF-8 text (byte {exc.start} of the line)") from None
            yield number, text
