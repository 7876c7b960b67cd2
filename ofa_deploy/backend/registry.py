"""Backend discovery: the built-in backends plus every plugin in the entry-point group.

A third-party package adds a backend with, in its ``pyproject.toml``::

    [project.entry-points."ofa_deploy.backends"]
    mybackend = "my_package.module:MyBackend"

A plugin whose name is already taken (by a built-in or an earlier plugin) is refused with one
warning line naming both packages; the first owner keeps the name.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import cache
from importlib import metadata as importlib_metadata
from typing import Any

from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.errors import BadInputError, OFADeployError, did_you_mean

ENTRY_POINT_GROUP = "ofa_deploy.backends"
TOOLKIT_DISTRIBUTION = "ofa-deploy"
BUILTIN_BACKENDS = {
    "onnxruntime": "ofa_deploy.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "ofa_deploy.backends.openvino:OpenVinoBackend",
    "tflite": "ofa_deploy.backends.tflite:TFLiteBackend",
    "adb": "ofa_deploy.backends.adb:AdbBackend",
    "fpga": "ofa_deploy.backends.fpga:FpgaBackend",
    "nvidia": "ofa_deploy.backends.nvidia:NvidiaBackend",
    "tvm": "ofa_deploy.backends.tvm:TvmBackend",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend comes from: its ``module:Class`` and the distribution that provides it."""

    name: str
    target: str  # "module:Class"
    distribution: str  # the package that provides it

    @property
    def builtin(self) -> bool:
        return self.distribution == TOOLKIT_DISTRIBUTION


def provider_of(ep: importlib_metadata.EntryPoint) -> str:
    """The distribution (name and version) that declares an entry point."""
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def plugin_entry_points(group: str) -> list[importlib_metadata.EntryPoint]:
    """The entry points of ``group``, by name; none (with one warning) when the metadata cannot be read."""
    try:
        return sorted(importlib_metadata.entry_points(group=group), key=lambda ep: ep.name)
    except Exception as exc:  # a broken third-party distribution must not break the toolkit
        log.warning("could not read the %s entry points (%s); only the built-in ones are available", group, exc)
        return []


@cache
def discover() -> dict[str, BackendEntry]:
    """Backend name -> where it comes from: built-ins first, then plugins (clashes refused)."""
    entries = {name: BackendEntry(name, target, TOOLKIT_DISTRIBUTION) for name, target in BUILTIN_BACKENDS.items()}
    for ep in plugin_entry_points(ENTRY_POINT_GROUP):
        provider = provider_of(ep)
        if ep.name in entries:
            if entries[ep.name].target == ep.value:
                continue  # the same class registered twice (e.g. the toolkit's own metadata): not a clash
            log.warning(
                "backend plugin '%s' from %s is refused: the name is already taken by %s (%s); rename the plugin's "
                "entry point",
                ep.name,
                provider,
                "the built-in backend of ofa-deploy" if entries[ep.name].builtin else entries[ep.name].distribution,
                entries[ep.name].target,
            )
            continue
        entries[ep.name] = BackendEntry(ep.name, ep.value, provider)
    return entries


def backend_names() -> list[str]:
    """Names of every discovered backend (built-ins and plugins), sorted."""
    return sorted(discover())


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name``; unknown names are exit 2, a broken plugin exit 1, both one line."""
    entries = discover()
    if name not in entries:
        known = sorted(entries)
        raise BadInputError(f"unknown backend '{name}'{did_you_mean(name, known)}; known backends: {', '.join(known)}")
    entry = entries[name]
    module_name, _, class_name = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise OFADeployError(
            f"backend '{name}' could not be loaded from {entry.target} ({entry.distribution}): {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise OFADeployError(f"backend '{name}' ({entry.target}) is not an ofa_deploy Backend subclass")
    if getattr(cls, "name", None) != name:
        raise OFADeployError(f"backend '{name}' ({entry.target}) declares the name {getattr(cls, 'name', None)!r}")
    return cls


@cache
def loadable_backends() -> dict[str, type[Backend]]:
    """Every backend whose module imports (a broken plugin is reported once and skipped)."""
    out = {}
    for name in backend_names():
        try:
            out[name] = backend_class(name)
        except OFADeployError as exc:
            log.warning("%s", exc)
    return out


def create_backend(name: str, timing: TimingOptions | None = None, **settings: Any) -> Backend:
    """An instance of backend ``name`` with ``timing`` and the given settings (see :func:`backend_class`)."""
    return backend_class(name)(timing=timing, **settings)
