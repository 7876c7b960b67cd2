"""Compiled CUDA code for a board's GPU on a machine without one (no driver, no GPU).

TVM's pip wheel keeps its CUDA runtime in ``libtvm_runtime_cuda.so``, which links the driver
(``libcuda.so.1``). Without a driver that library does not load, and a TVM build then silently
ships CUDA *source* instead of code for the board. Two pieces fix that, both loaded in a build
worker process before TVM is imported:

* a driver *stub*: a tiny ``libcuda.so.1`` that exports the few driver symbols the runtime links
  against and answers every call with ``CUDA_ERROR_NO_DEVICE`` (nothing is ever launched here;
  the module only has to be created and serialised). It is compiled once with the same
  ``ziglang`` (or host ``cc``) used for cross-linking and cached;
* NVRTC from the CUDA 12 pip wheel (``nvidia-cuda-nvrtc-cu12``), called through ctypes, which
  compiles TVM's generated kernels into a cubin for the board's ``sm_XX`` (12.x covers sm_50 up to
  sm_121, so every Jetson from the Nano's sm_53 to the Orin's sm_87).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from ofa_deploy.backend.build_cache import user_cache_dir
from ofa_deploy.errors import TargetUnavailableError

log = logging.getLogger(__name__)

# What libtvm_runtime_cuda.so (apache-tvm 0.27) needs from the driver.
DRIVER_SYMBOLS = (
    "cuDeviceGetName",
    "cuFuncSetAttribute",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuLaunchKernelEx",
    "cuModuleGetFunction",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuTensorMapEncodeTiled",
    "cuInit",
    "cuDriverGetVersion",
)
CUDA_ERROR_NO_DEVICE = 100
NVRTC_SUCCESS = 0
INSTALL_NVRTC = "pip install 'ofa-deploy[jetson]' (it brings nvidia-cuda-nvrtc-cu12)"

# NVRTC has no C++ standard library; TVM's kernels only need the fixed-width integer names and a
# few type traits from libcu++ (<cuda/std/...>), which the NVRTC wheel does not ship. These
# in-memory headers provide exactly those names.
_CSTDINT = """#pragma once
namespace cuda { namespace std {
typedef signed char int8_t; typedef short int16_t; typedef int int32_t; typedef long long int64_t;
typedef unsigned char uint8_t; typedef unsigned short uint16_t; typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
} }
"""
_TYPE_TRAITS = """#pragma once
namespace cuda { namespace std {
template <class T, T v> struct integral_constant { static constexpr T value = v; };
typedef integral_constant<bool, true> true_type; typedef integral_constant<bool, false> false_type;
template <class A, class B> struct is_same : false_type {};
template <class A> struct is_same<A, A> : true_type {};
template <class A, class B> constexpr bool is_same_v = is_same<A, B>::value;
template <class T> struct is_integral : false_type {};
#define OFA_INTEGRAL(T) template <> struct is_integral<T> : true_type {};
OFA_INTEGRAL(bool) OFA_INTEGRAL(char) OFA_INTEGRAL(signed char) OFA_INTEGRAL(unsigned char) OFA_INTEGRAL(short)
OFA_INTEGRAL(unsigned short) OFA_INTEGRAL(int) OFA_INTEGRAL(unsigned int) OFA_INTEGRAL(long)
OFA_INTEGRAL(unsigned long) OFA_INTEGRAL(long long) OFA_INTEGRAL(unsigned long long)
#undef OFA_INTEGRAL
template <class T> struct is_floating_point : false_type {};
template <> struct is_floating_point<float> : true_type {};
template <> struct is_floating_point<double> : true_type {};
template <class T> struct is_signed : integral_constant<bool, (T(-1) < T(0))> {};
template <class T> struct is_unsigned : integral_constant<bool, (T(0) < T(-1))> {};
template <bool B, class T = void> struct enable_if {};
template <class T> struct enable_if<true, T> { typedef T type; };
template <bool B, class T, class F> struct conditional { typedef T type; };
template <class T, class F> struct conditional<false, T, F> { typedef F type; };
} }
"""
_HEADERS = {"cuda/std/cstdint": _CSTDINT, "cuda/std/type_traits": _TYPE_TRAITS}


def cache_dir() -> Path:
    """``tvm`` in the user's ofa-deploy cache (:func:`~ofa_deploy.backend.build_cache.user_cache_dir`)."""
    return user_cache_dir("tvm")


# ---------------------------------------------------------------------- NVRTC
def _site_dirs() -> list[str]:
    return list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]))


def find_nvrtc() -> Path:
    """libnvrtc.so.12 from the pip wheel (or the system); TargetUnavailableError naming the extra if absent."""
    for site in _site_dirs():
        hits = sorted(glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.12*")))
        if hits:
            return Path(hits[0])
    for name in ("libnvrtc.so.12",):
        try:
            ctypes.CDLL(name)
            return Path(name)
        except OSError:
            pass
    raise TargetUnavailableError(f"CUDA builds need NVRTC 12 (libnvrtc.so.12), which is not installed: {INSTALL_NVRTC}")


class Nvrtc:
    """The few NVRTC calls a build needs, through ctypes (no cuda-python dependency)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or find_nvrtc()
        self.lib = ctypes.CDLL(str(self.path))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    @property
    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        return major.value, minor.value

    def supported_archs(self) -> list[int]:
        count = ctypes.c_int()
        self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count))
        archs = (ctypes.c_int * count.value)()
        self.lib.nvrtcGetSupportedArchs(archs)
        return list(archs)

    def _check(self, result: int, what: str, log_text: str = "") -> None:
        if result != NVRTC_SUCCESS:
            reason = self.lib.nvrtcGetErrorString(result).decode()
            raise RuntimeError(f"NVRTC {what} failed ({reason}){': ' + log_text[-2000:] if log_text else ''}")

    def compile_cubin(self, code: str, arch: str) -> bytes:
        """Compile CUDA source to a cubin for ``arch`` (``sm_87``)."""
        names = [n.encode() for n in _HEADERS]
        sources = [s.encode() for s in _HEADERS.values()]
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog),
                code.encode(),
                b"tvm_kernels.cu",
                len(names),
                (ctypes.c_char_p * len(sources))(*sources),
                (ctypes.c_char_p * len(names))(*names),
            ),
            "program creation",
        )
        try:
            options = [f"--gpu-architecture={arch}".encode(), b"-default-device", b"-w"]
            result = self.lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
            self._check(result, f"compilation for {arch}", self._log(prog))
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
            cubin = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetCUBIN(prog, cubin), "cubin")
            return cubin.raw
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _log(self, prog: ctypes.c_void_p) -> str:
        size = ctypes.c_size_t()
        self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        text = ctypes.create_string_buffer(size.value)
        self.lib.nvrtcGetProgramLog(prog, text)
        return text.value.decode(errors="replace")


def check_arch(nvrtc: Nvrtc, arch: str) -> None:
    """One line (exit 3) when this NVRTC cannot compile for the board's architecture."""
    number = int(arch.removeprefix("sm_"))
    if number not in nvrtc.supported_archs():
        major, minor = nvrtc.version
        raise TargetUnavailableError(
            f"NVRTC {major}.{minor} ({nvrtc.path}) cannot compile for {arch}; it supports "
            f"sm_{min(nvrtc.supported_archs())}..sm_{max(nvrtc.supported_archs())}: install a CUDA 12 NVRTC "
            "(pip install 'nvidia-cuda-nvrtc-cu12<13')"
        )


def cuda_newer_than_board(nvrtc_version: tuple[int, int], board_cuda: str | None) -> str | None:
    """A warning when the CUDA used is newer than the board's JetPack CUDA (None when it is not)."""
    if not board_cuda:
        return None
    major, minor = (int(p) for p in board_cuda.split(".")[:2])
    if nvrtc_version <= (major, minor):
        return None
    return (
        f"the CUDA code is compiled with NVRTC {nvrtc_version[0]}.{nvrtc_version[1]}, newer than the board's "
        f"JetPack CUDA {board_cuda}: its driver may refuse the cubin (CUDA_ERROR_UNSUPPORTED_PTX_VERSION or "
        "NO_BINARY_FOR_GPU); upgrade JetPack or build with a matching NVRTC"
    )


# ---------------------------------------------------------------------- driver stub
def _stub_source() -> str:
    body = "\n".join(f"int {name}(void) {{ return {CUDA_ERROR_NO_DEVICE}; }}" for name in DRIVER_SYMBOLS)
    return f"/* ofa-deploy: CUDA driver stub for GPU-less builds; every call fails with NO_DEVICE */\n{body}\n"


def host_c_compiler() -> list[str]:
    """A C compiler for this machine: the ziglang wheel if installed, else cc/gcc."""
    try:
        import ziglang  # noqa: F401

        return [sys.executable, "-m", "ziglang", "cc"]
    except ImportError:
        pass
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise TargetUnavailableError(
        "building CUDA code without a GPU needs a C compiler for a small driver stub: "
        "pip install 'ofa-deploy[jetson]' (ziglang) or install gcc"
    )


def driver_stub() -> Path:
    """The cached stub ``libcuda.so.1`` (built on first use)."""
    source = _stub_source()
    tag = hashlib.sha256(source.encode()).hexdigest()[:12]
    directory = cache_dir() / f"cuda-driver-stub-{tag}"
    library = directory / "libcuda.so.1"
    if library.is_file():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "stub.c").write_text(source)
    partial = directory / f"libcuda.so.1.{os.getpid()}"
    command = [*host_c_compiler(), "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(partial)]
    done = subprocess.run([*command, str(directory / "stub.c")], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise TargetUnavailableError(f"cannot build the CUDA driver stub: {done.stderr.strip()[-300:]}")
    os.replace(partial, library)
    return library


def _find_cudart() -> str | None:
    """libcudart.so.13, which TVM's CUDA runtime links (system CUDA, or the pip ``nvidia-cuda-runtime``)."""
    try:
        ctypes.CDLL("libcudart.so.13", mode=ctypes.RTLD_GLOBAL)
        return "libcudart.so.13"
    except OSError:
        pass
    for site in _site_dirs():
        for pattern in ("nvidia/cu13/lib/libcudart.so.13*", "nvidia/cuda_runtime/lib/libcudart.so.13*"):
            hits = sorted(glob.glob(os.path.join(site, pattern)))
            if hits:
                ctypes.CDLL(hits[0], mode=ctypes.RTLD_GLOBAL)
                return hits[0]
    return None


def driver_present() -> bool:
    """Whether the NVIDIA driver library (``libcuda.so.1``) loads in this process."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def prepare_gpu_less_cuda() -> None:
    """Make TVM's CUDA codegen produce a real CUDA module in this process. Call before ``import tvm``."""
    if "tvm" in sys.modules:
        raise RuntimeError("prepare_gpu_less_cuda() must run before TVM is imported")
    if not driver_present():
        ctypes.CDLL(str(driver_stub()), mode=ctypes.RTLD_GLOBAL)
    if _find_cudart() is None:
        raise TargetUnavailableError(
            "TVM's CUDA runtime needs libcudart.so.13, which is not installed: "
            "pip install 'nvidia-cuda-runtime>=13,<14'"
        )


def register_nvrtc_callback(nvrtc: Nvrtc, arch: str) -> None:
    """Make TVM compile its generated CUDA kernels with ``nvrtc`` into a cubin for ``arch``."""
    import tvm_ffi

    def compile_kernels(code: str, *_: object) -> bytes:
        return nvrtc.compile_cubin(code, arch)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_kernels, override=True)


def cuda_arch_of(target: dict) -> str | None:
    """``sm_XX`` of a CUDA target dict, None for a CPU target."""
    if target.get("kind") != "cuda":
        return None
    arch = str(target.get("arch", ""))
    if not re.fullmatch(r"sm_\d+", arch):
        raise ValueError(f"cuda target needs 'arch' like 'sm_87', got {arch!r}")
    return arch
