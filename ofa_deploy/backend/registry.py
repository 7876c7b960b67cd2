"""Backend discovery: every backend is an entry point of the ``ofa_deploy.backends`` group.

The built-in backends are registered exactly as a plugin's are, in ofa-deploy's own
``pyproject.toml``; a third-party package adds one with, in its ``pyproject.toml``::

    [project.entry-points."ofa_deploy.backends"]
    mybackend = "my_package.module:MyBackend"

The toolkit's own entry points come first; a plugin whose name is already taken (by a built-in or
an earlier plugin) is refused with one warning line naming both packages, and the first owner keeps
the name.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import metadata as importlib_metadata
from typing import Any

from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.errors import BadInputError, OFADeployError, did_you_mean

ENTRY_POINT_GROUP = "ofa_deploy.backends"
TOOLKIT_DISTRIBUTION = "ofa-deploy"
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


def entry_points_in(group: str) -> list[importlib_metadata.EntryPoint]:
    """The entry points of ``group``, by name; none (with one warning) when the metadata cannot be read."""
    try:
        return sorted(importlib_metadata.entry_points(group=group), key=lambda ep: ep.name)
    except Exception as exc:  # a broken third-party distribution must not break the toolkit
        log.warning("could not read the %s entry points (%s)", group, exc)
        return []


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _is_toolkit(ep: importlib_metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and _normalized(dist.name) == TOOLKIT_DISTRIBUTION


@cache
def builtin_backends() -> dict[str, str]:
    """The toolkit's own backends (name -> ``module:Class``), read from its installed entry points."""
    found = {ep.name: ep.value for ep in entry_points_in(ENTRY_POINT_GROUP) if _is_toolkit(ep)}
    if not found:
        raise OFADeployError(
            "ofa-deploy's own backends are not registered (its installed metadata has no 'ofa_deploy.backends' "
            "entry points): reinstall it, e.g. pip install --force-reinstall ofa-deploy"
        )
    return found


@cache
def discover() -> dict[str, BackendEntry]:
    """Backend name -> where it comes from: the toolkit's own first, then plugins (clashes refused)."""
    entries = {name: BackendEntry(name, target, TOOLKIT_DISTRIBUTION) for name, target in builtin_backends().items()}
    for ep in entry_points_in(ENTRY_POINT_GROUP):
        if _is_toolkit(ep):
            continue
        provider = provider_of(ep)
        if ep.name in entries:
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
