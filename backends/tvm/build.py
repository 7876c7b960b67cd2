"""Building TVM libraries: the toolkit's ONNX -> Relax -> ``tvm.compile`` -> a shared library.

Builds run in worker processes (``BuildPool``), so many operators compile in parallel while the
device times the ones already built, and so each worker can prepare what the target needs before
TVM is imported (the CUDA driver stub and NVRTC for a GPU-less CUDA build, see
:mod:`ofa_deploy.backends.tvm.cuda`). GPU targets get TVM's default GPU schedule rules
(``tvm.s_tir.dlight``, applied by the CUDA default pipeline); CPU targets TVM's default CPU pipeline.
Every library built is kept in the user's build cache (:mod:`ofa_deploy.backend.build_cache`), keyed
by its ONNX bytes and everything else it depends on (:func:`build_identity`): a resumed profile, a
second board of the same kind or a ``compile`` of a network built before reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ofa_deploy import __version__
from ofa_deploy.backend.artifact import EM_CUDA, elf_machine
from ofa_deploy.backend.build_cache import BuildCache, content_key
from ofa_deploy.backends.tvm import cross as tvm_cross
from ofa_deploy.backends.tvm import cuda as tvm_cuda
from ofa_deploy.backends.tvm.cross import shared_library_linker
from ofa_deploy.errors import BadInputError, OFADeployError, TargetUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSpec:
    """Everything a worker needs to build for one target (picklable)."""

    target: str  # TVM target as JSON (dict form) or a plain string such as "llvm"
    host: str | None  # host target JSON for a GPU target, None otherwise
    cross_compiler: str  # "host", "zig" or "gcc" (see tvm_cross)

    @property
    def target_dict(self) -> dict[str, Any]:
        return parse_target(self.target, "target")

    @property
    def host_dict(self) -> dict[str, Any] | None:
        return parse_target(self.host, "target_host") if self.host else None

    @property
    def cuda_arch(self) -> str | None:
        return tvm_cuda.cuda_arch_of(self.target_dict)

    @property
    def triple(self) -> str | None:
        """The CPU triple the library runs on (None: this machine)."""
        cpu = self.host_dict if self.cuda_arch else self.target_dict
        return (cpu or {}).get("mtriple")

    @property
    def device_type(self) -> str:
        return "cuda" if self.cuda_arch else "cpu"


def parse_target(text: str, field: str) -> dict[str, Any]:
    """A target setting (JSON dict, or a bare kind such as ``llvm``) as TVM's dict form."""
    text = text.strip()
    if not text.startswith("{"):
        return {"kind": text}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"tvm setting '{field}': not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise BadInputError(f"tvm setting '{field}': a JSON object with a 'kind' is needed, got {text[:80]}")
    return value


# ---------------------------------------------------------------------- worker side
_worker: dict[str, Any] = {}


def _init_worker(spec: BuildSpec) -> None:
    """Remember the target; the work is done by the first task, so that a failure reaches the caller
    as one error instead of a broken pool."""
    os.environ.setdefault("TVM_NUM_THREADS", "1")  # a build worker must not take the whole machine
    # tvm_ffi imports torch when it can (for DLPack exchange, which a build never uses): 3.6 of the
    # 6 s a worker took to import TVM. A build worker is a fresh process; torch stays out of it.
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
    _worker["spec"] = spec


def _prepare() -> None:
    """Prepare this worker for its target (runs before TVM is imported here), once."""
    if "target" in _worker:
        return
    spec: BuildSpec = _worker["spec"]
    if spec.cuda_arch:
        nvrtc = tvm_cuda.Nvrtc()
        tvm_cuda.check_arch(nvrtc, spec.cuda_arch)
        tvm_cuda.prepare_gpu_less_cuda()
        _worker["cuda_version"] = "{}.{}".format(*nvrtc.version)
    import tvm
    import tvm.support.nvcc  # registers TVM's own CUDA callback, replaced next

    if spec.cuda_arch:
        tvm_cuda.register_nvrtc_callback(nvrtc, spec.cuda_arch)

    host = spec.host_dict
    _worker["target"] = tvm.target.Target(spec.target_dict, host=host) if host else tvm.target.Target(spec.target_dict)
    _worker["fcompile"] = shared_library_linker(spec.cross_compiler, spec.triple)


def _build(onnx_bytes: bytes) -> bytes:
    """One ONNX model -> the bytes of a shared library for the worker's target."""
    _prepare()  # before TVM is imported in this process
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load_model_from_string(onnx_bytes)
    mod = from_onnx(model, keep_params_in_input=False)
    executable = tvm.compile(mod, target=_worker["target"])
    cuda = [m for m in _modules(executable.mod) if m.kind == "cuda"]
    if cuda and "cubin" not in cuda[0].get_write_formats() and not _worker.get("cuda_version"):
        raise RuntimeError("TVM produced a CUDA source module instead of compiled code")
    with tempfile.TemporaryDirectory(prefix="ofa-tvm-") as tmp:
        path = Path(tmp) / "model.so"
        executable.export_library(str(path), fcompile=_worker["fcompile"])
        return path.read_bytes()


def _modules(module: Any) -> list[Any]:
    out, todo = [], [module]
    while todo:
        m = todo.pop()
        out.append(m)
        todo.extend(m.imports)
    return out


def _worker_facts() -> dict[str, Any]:
    _prepare()
    import tvm

    return {
        "tvm_version": tvm.__version__,
        "cuda_version": _worker.get("cuda_version"),
        "target": str(_worker["target"]),
    }


# ---------------------------------------------------------------------- host side
def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def build_identity(spec: BuildSpec) -> dict[str, Any]:
    """Everything a library depends on besides its ONNX bytes: the target, the versions of TVM, of
    the linker and of NVRTC, and the build recipe itself (the source of the modules that build)."""
    recipe = hashlib.sha256()
    for module in (__file__, tvm_cross.__file__, tvm_cuda.__file__):
        recipe.update(Path(module).read_bytes())
    identity: dict[str, Any] = {
        "spec": dataclasses.asdict(spec),
        "ofa_deploy": __version__,
        "recipe": recipe.hexdigest(),
        "apache-tvm": _package_version("apache-tvm"),
        "apache-tvm-ffi": _package_version("apache-tvm-ffi"),
    }
    if spec.cross_compiler == "zig":
        identity["ziglang"] = _package_version("ziglang")
    if spec.cuda_arch:
        identity["nvrtc"] = list(tvm_cuda.Nvrtc().version)
    return identity


class BuildPool:
    """Worker processes building libraries for one target; ``submit`` returns a future of the bytes.
    With a ``cache``, a library built before (same ONNX bytes, same :func:`build_identity`) is read
    from it instead, and every new one is stored there once built."""

    def __init__(self, spec: BuildSpec, workers: int = 1, cache: BuildCache | None = None) -> None:
        self.spec = spec
        self.workers = max(1, workers)
        self.cache = cache
        self.built = 0  # libraries built by the workers
        self.reused = 0  # libraries read from the cache
        self._identity: dict[str, Any] | None = None
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # never fork a process holding TVM or threads
            self._pool = ProcessPoolExecutor(self.workers, context, initializer=_init_worker, initargs=(self.spec,))
        return self._pool

    def submit(self, onnx_bytes: bytes) -> Future:
        key = None
        if self.cache is not None:
            if self._identity is None:
                self._identity = build_identity(self.spec)
            key = content_key(onnx_bytes, self._identity)
            cached = self.cache.load(key)
            if cached is not None and elf_machine(cached) != -1:  # a damaged entry is built again
                self.reused += 1
                done: Future = Future()
                done.set_result(cached)
                return done
        self.built += 1
        future = self._executor().submit(_build, onnx_bytes)
        if key is not None:
            future.add_done_callback(lambda finished: self._store(key, finished))
        return future

    def _store(self, key: str, future: Future) -> None:
        if future.cancelled() or future.exception() is not None or self.cache is None:
            return
        try:
            self.cache.store(key, future.result())
        except OFADeployError as exc:  # a full or read-only cache costs the entry, not the build
            log.debug("not cached: %s", exc)

    def facts(self) -> dict[str, Any]:
        """TVM version, resolved target and CUDA version used, as a worker sees them."""
        return self.result(self._executor().submit(_worker_facts), "starting a TVM build worker")

    def result(self, future: Future, what: str) -> Any:
        """A build's result; a worker's failure becomes one line."""
        try:
            return future.result()
        except OFADeployError:
            raise
        except BrokenProcessPool:
            self.close()
            raise TargetUnavailableError(f"the TVM build worker died while {what} (out of memory?)") from None
        except Exception as exc:  # a TVM or linker failure in the worker
            text = " ".join(str(exc).split())
            raise OFADeployError(f"TVM build failed while {what}: {type(exc).__name__}: {text[-600:]}") from None

    def build(self, onnx_bytes: bytes, what: str) -> bytes:
        return self.result(self.submit(onnx_bytes), what)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self.cache is not None and self.built:
            self.cache.prune()


# ---------------------------------------------------------------------- inspecting a library
def cuda_architectures(data: bytes) -> list[int]:
    """SM numbers of the CUDA cubins embedded in a library (ELF objects with e_machine EM_CUDA)."""
    archs, start = [], 0
    while (at := data.find(b"\x7fELF", start)) >= 0:
        start = at + 4
        header = data[at : at + 64]
        if len(header) == 64 and header[4] == 2 and elf_machine(header) == EM_CUDA:  # 64-bit cubin
            flags = int.from_bytes(header[48:52], "little")
            # NVRTC 12.x (EI_OSABI 0x33) keeps the SM number in bits 0..7 of e_flags (checked here for sm_53..sm_87);
            # CUDA 13's cubins (EI_OSABI 0x41) move it to bits 8..15 (not checked here: no CUDA 13 NVRTC is used)
            arch = (flags >> 8) & 0xFF if header[7] >= 0x41 else flags & 0xFF
            archs.append(arch)
    return archs
