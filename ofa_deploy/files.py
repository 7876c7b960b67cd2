"""Writing outputs safely: atomic files and directories with the user's umask, and locks on outputs.

Every file the toolkit writes appears whole or not at all (written beside its target, flushed,
then renamed over it), with the permissions an ordinary write would give under the user's umask
(0644 under umask 022), so a shared device-lab folder can read LUTs and bundles. Private keys are
the exception and stay 0600. A long writer (``profile``) holds a lock on its output so a second run
on the same file is refused instead of interleaving writes; a lock left by a killed run is
recovered.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ofa_deploy.errors import BadInputError, OFADeployError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file here (0644 under umask 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
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
    atomic_write_bytes(path, text.encode("utf-8"), mode)


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
    if target.is_dir() and any(target.iterdir()) and not force:
        raise BadInputError(f"{target}: exists and is not empty; pass --force to replace it, or choose another --out")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from None
    with output_lock(target):
        # holding the lock, any partial build beside the target is a killed run's: remove it
        for stale in target.parent.glob(f".{target.name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        yield from _build_and_swap(target)


def _build_and_swap(target: Path):
    try:
        build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        os.chmod(build, dir_mode())
    except OSError as exc:
        raise _write_error(target, exc) from None
    try:
        yield build
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # a killed process nobody has reaped yet still answers signals: it is a zombie, not a writer
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


@contextmanager
def output_lock(path: Path):
    """Hold ``PATH.lock`` while writing ``path``; a second holder is refused naming the first's pid."""
    lock = Path(str(path) + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from None
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode())
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and _alive(holder) and holder != os.getpid():
                raise BadInputError(
                    f"{path} is being written by another ofa-deploy run (pid {holder}); wait for it, or remove "
                    f"{lock} if that process is not ofa-deploy"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer was killed
            continue
        except OSError as exc:
            raise _write_error(path, exc) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:  # pragma: no cover - two racing recoveries
        raise BadInputError(f"{path}: could not take the lock {lock}; try again")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
