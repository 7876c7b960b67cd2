"""Which NVIDIA GPUs this machine has, asked of the CUDA driver itself (``libcuda.so.1`` via ctypes).

The driver API needs no Python package, so the answer is the same with or without the ``nvidia``
extra, and a machine without a GPU gets one precise line: no driver (the library does not load),
or a driver but no CUDA device (``cuInit`` fails with ``CUDA_ERROR_NO_DEVICE``, or the count is 0).
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import asdict, dataclass
from typing import Any

from ofa_deploy.errors import TargetUnavailableError

DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
CUDA_SUCCESS = 0
CUDA_ERROR_NO_DEVICE = 100
ATTRIBUTE_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
ATTRIBUTE_CC_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
ATTRIBUTE_SM_COUNT = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as the driver reports it."""

    index: int
    name: str
    compute_capability: str  # "8.0"
    multiprocessors: int
    memory_mib: int
    driver_cuda_version: str  # the CUDA version the driver supports, "12.4"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def cache_tag(self) -> str:
        """What a serialized engine depends on: the GPU model and its architecture."""
        return f"{self.name} sm_{self.compute_capability.replace('.', '')}"


def _load_driver(library: str) -> Any:
    try:
        return ctypes.CDLL(library)
    except OSError:
        raise TargetUnavailableError(
            f"backend 'nvidia': no NVIDIA driver on this machine ({library} cannot be loaded); "
            "it needs an NVIDIA GPU with its driver installed"
        ) from None


def _call(lib: Any, function: str, *args: Any) -> int:
    return int(getattr(lib, function)(*args))


def _version(code: int) -> str:
    return f"{code // 1000}.{(code % 1000) // 10}"


def list_gpus(library: str | None = None) -> list[GpuInfo]:
    """Every CUDA device visible to this process (``CUDA_VISIBLE_DEVICES`` applies); ``library``:
    the driver library to ask (default :data:`DRIVER_LIBRARY`).

    Raises TargetUnavailableError naming what is missing: the driver, or any CUDA device."""
    lib = _load_driver(library or DRIVER_LIBRARY)
    status = _call(lib, "cuInit", ctypes.c_uint(0))
    if status == CUDA_ERROR_NO_DEVICE:
        raise TargetUnavailableError("backend 'nvidia': the NVIDIA driver is installed but reports no CUDA device")
    if status != CUDA_SUCCESS:
        raise TargetUnavailableError(
            f"backend 'nvidia': the NVIDIA driver failed to initialise (CUDA error {status}); "
            "check `nvidia-smi` and the driver installation"
        )
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    _call(lib, "cuDriverGetVersion", ctypes.byref(version))
    if _call(lib, "cuDeviceGetCount", ctypes.byref(count)) != CUDA_SUCCESS or count.value < 1:
        raise TargetUnavailableError("backend 'nvidia': the NVIDIA driver is installed but reports no CUDA device")
    gpus = []
    for index in range(count.value):
        device = ctypes.c_int(0)
        _call(lib, "cuDeviceGet", ctypes.byref(device), ctypes.c_int(index))
        name = ctypes.create_string_buffer(256)
        _call(lib, "cuDeviceGetName", name, ctypes.c_int(256), device)
        values = {}
        for attribute in (ATTRIBUTE_CC_MAJOR, ATTRIBUTE_CC_MINOR, ATTRIBUTE_SM_COUNT):
            value = ctypes.c_int(0)
            _call(lib, "cuDeviceGetAttribute", ctypes.byref(value), ctypes.c_int(attribute), device)
            values[attribute] = value.value
        memory = ctypes.c_size_t(0)
        function = "cuDeviceTotalMem_v2" if hasattr(lib, "cuDeviceTotalMem_v2") else "cuDeviceTotalMem"
        _call(lib, function, ctypes.byref(memory), device)
        gpus.append(
            GpuInfo(
                index=index,
                name=name.value.decode(errors="replace"),
                compute_capability=f"{values[ATTRIBUTE_CC_MAJOR]}.{values[ATTRIBUTE_CC_MINOR]}",
                multiprocessors=values[ATTRIBUTE_SM_COUNT],
                memory_mib=memory.value // 2**20,
                driver_cuda_version=_version(version.value),
            )
        )
    return gpus


def select_gpu(index: int, library: str | None = None) -> GpuInfo:
    """The GPU ``index`` (the ``device_index`` setting), or one line naming the GPUs there are."""
    gpus = list_gpus(library)
    if not 0 <= index < len(gpus):
        present = ", ".join(f"{g.index}: {g.name}" for g in gpus)
        raise TargetUnavailableError(f"backend 'nvidia': no CUDA device {index}; this machine has {present}")
    return gpus[index]
