"""Writing outputs safely: atomic files and directories with the user's umask, and locks on outputs.

Every file the toolkit writes appears whole or not at all (written beside its target, flushed,
then renamed over it), with the permissions an ordinary write would give under the user's umask
(0644 under umask 022), so a shared device-lab folder can read LUTs and bundles. Private keys are
the exception and stay 0600. Every verb that writes a LUT (``profile``, ``validate``, ``fit``) holds
the same lock on its output, so a second writer is refused instead of overwriting it; the lock is an
operating-system file lock, released by the kernel when a run is killed. JSON is written strict
(no NaN or Infinity).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ofa_deploy.errors import BadInputError, OFADeployError

log = logging.getLogger(__name__)


def _umask() -> int:
    """The process's umask, read without changing it: ``os.umask`` reads it only by setting another,
    and a file another thread created meanwhile (fleet deploys write records from threads) would get
    no umask at all. Linux states it in /proc; elsewhere, the one read when this module was imported."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def _umask_by_setting() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_by_setting()  # at import, before the toolkit starts any thread


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file here (0644 under umask 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plain ``mkdir`` would give a new directory here (0755 under umask 022)."""
    return 0o777 & ~_umask()


def _write_error(path: Path, exc: OSError) -> OFADeployError:
    blocking = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return BadInputError(f"{path}: {blocking} is a file, not a directory; choose another output")
    if exc.errno == errno.ENOSPC:
        return OFADeployError(f"{path}: no space left on the device; nothing was written")
    return BadInputError(f"{path}: cannot write ({exc.strerror or exc}); choose another output")


def ensure_parent(path: Path) -> None:
    """Create ``path``'s directory now, so an unusable output fails before any work (one line, exit 2)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(Path(path), exc) from None


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers (and a kill -9) see the old file or the new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def strict_json(document: Any, **dumps_kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (``allow_nan=False``): every JSON file the toolkit
    writes is strict JSON that any parser reads. A non-finite number here is a bug (exit 1), and
    nothing is written."""
    try:
        return json.dumps(document, allow_nan=False, **dumps_kwargs)
    except ValueError as exc:
        raise OFADeployError(f"internal error: refusing to write a non-finite number as JSON ({exc})") from None


def finite_json(value: Any, where: str = "$") -> Any:
    """``value`` with every non-finite float replaced by None (logged at debug level with its path):
    what a report may hold (a Kendall tau of constant values is NaN) made fit for :func:`strict_json`."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        log.debug("--json: %s is %r, written as null", where, value)
        return None
    if isinstance(value, Mapping):
        return {k: finite_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def atomic_write_json(path: Path, document: Any, **dumps_kwargs: Any) -> None:
    """``document`` as strict JSON (:func:`strict_json`) plus a newline, written atomically."""
    atomic_write_text(path, strict_json(document, **dumps_kwargs) + "\n")


def atomic_write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` of ``obj`` (tensors, state dicts), written atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_figure(path: Path, figure, **savefig_kwargs) -> None:
    """A matplotlib figure saved atomically (rendered to memory first)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


@contextmanager
def atomic_text_file(path: Path):
    """``with atomic_text_file(p) as f:`` like ``open(p, "w", newline="")``, written atomically on success."""
    buffer = io.StringIO(newline="")
    yield buffer
    atomic_write_text(path, buffer.getvalue())


@contextmanager
def atomic_directory(target: Path, force: bool = False):
    """Build a directory beside ``target`` and put it in place at the end.

    ``target`` must not exist or be empty, unless ``force``: then the old directory is replaced as
    a whole when the new one is complete. On any failure or interruption the partial build is
    removed and ``target`` is as it was. Yields the directory to build in."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise BadInputError(f"{target}: exists and is not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from None
    with output_lock(target):
        _clear_killed_runs(target)
        if target.is_dir() and any(target.iterdir()) and not force:
            raise BadInputError(
                f"{target}: exists and is not empty; pass --force to replace it, or choose another --out"
            )
        yield from _build_and_swap(target)


def _clear_killed_runs(target: Path) -> None:
    """Holding the lock, what lies beside ``target`` is a killed run's: a partial build is removed; an
    old directory set aside by a run killed between its two renames (where the swap is not one atomic
    exchange) is put back if ``target`` is missing, and removed otherwise."""
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in sorted(target.parent.glob(f".{target.name}.replaced-*")):
        if not target.exists():
            os.rename(stale, target)
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _exchange(new: Path, old: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so no reader and
    no kill ever sees ``old`` missing. False where the system or file system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(old), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(old))


def _build_and_swap(target: Path):
    try:
        build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        os.chmod(build, dir_mode())
    except OSError as exc:
        raise _write_error(target, exc) from None
    try:
        yield build
        if target.exists() and _exchange(build, target):
            shutil.rmtree(build, ignore_errors=True)  # it holds the old directory now
            return
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.replaced-{os.getpid()}"
            os.rename(target, old)
        os.rename(build, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(build, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)):
            raise _write_error(target, exc) from None
        raise


def _record_holder(fd: int) -> None:
    """Called by filelock with the held lock's descriptor: note our pid there, for the refusal message."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(lock: Path) -> str:
    """`` (pid N)`` from a held lock file, or "" (the file is data: read only if regular, 64 bytes at most)."""
    from ofa_deploy.inputs import read_input_text

    try:
        pid = int(read_input_text(lock, "lock file", 64).split()[0])
    except (OFADeployError, ValueError, IndexError):
        return ""
    return f" (pid {pid})"


@contextmanager
def output_lock(path: Path):
    """Hold ``PATH.lock`` while writing ``path``: a second writer (any verb, any process, any host that
    shares the directory) is refused at once with one line, naming the holder's pid.

    The lock is an operating-system file lock (``filelock``: ``flock``, which NFS and other shared file
    systems honour), so the kernel releases it when its holder dies: a lock left by a killed run is
    never in the way. The lock file is removed on release; a run that locked the file just as its
    last holder removed it finds its pid missing from the file at that path, and takes the lock again.
    Taken again by the process that holds it (``profile`` locks its ``--out`` at the verb and in the
    profiling loop), it is the same lock."""
    from filelock import FileLock, Timeout

    lock_path = Path(str(path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from None
    lock = FileLock(
        lock_path, timeout=0, thread_local=False, is_singleton=True, mode=file_mode(), on_acquired=_record_holder
    )
    for _ in range(_LOCK_ATTEMPTS):
        try:
            lock.acquire()
        except Timeout:
            raise BadInputError(
                f"{path} is being written by another ofa-deploy run{_holder(lock_path)}; wait for it to finish "
                "(its lock is released when it ends, even if it is killed)"
            ) from None
        except OSError as exc:
            raise _write_error(path, exc) from None
        if lock.lock_counter > 1 or _holder(lock_path) == f" (pid {os.getpid()})":
            break
        # the file was opened just before its last holder removed it: the lock is on a file no one else
        # will open (another run may hold a new one at that path), so it is no lock: let go and take it again
        lock.release()
    else:
        raise OFADeployError(f"{lock_path}: cannot take the output lock (the file keeps being replaced)")
    try:
        yield
    finally:
        if lock.lock_counter == 1:  # the outermost holder: unlinked while held, so no one else holds this inode
            with suppress(OSError):
                lock_path.unlink()
        lock.release()


_LOCK_ATTEMPTS = 5
