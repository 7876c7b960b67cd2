"""Device profiles: a name that expands to a full, validated target configuration.

A profile is one YAML file in ``device_profiles/`` (installed as ``ofa_deploy.device_profiles``),
in a plugin's profile folder, or any path a user gives: the backend, its timing options and
settings, and the width multiplier and resolutions to profile by default.

A plugin ships profiles for its devices by naming a package folder of YAML files in its
``pyproject.toml``::

    [project.entry-points."ofa_deploy.device_profiles"]
    myboards = "my_package.profiles"

Each ``NAME.yaml`` there is then ``--device NAME`` and listed by ``devices``. A plugin profile whose
name is taken (by a built-in or an earlier plugin) is refused with one warning naming both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.registry import TOOLKIT_DISTRIBUTION, backend_class, entry_points_in, provider_of
from ofa_deploy.backend.settings import parse_settings
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.errors import BadInputError, did_you_mean, short_repr
from ofa_deploy.space.arch import RESOLUTIONS, check_resolutions, check_width_mult

PROFILE_ENTRY_POINT_GROUP = "ofa_deploy.device_profiles"
log = logging.getLogger(__name__)

_KEYS = {"name", "description", "backend", "width_mult", "resolutions", "timing", "settings"}


@dataclass
class DeviceProfile:
    """A device profile: the backend, its timing and settings, and the width and resolutions to profile by default."""

    name: str
    description: str
    backend: str
    width_mult: float = 1.0
    resolutions: tuple[int, ...] = RESOLUTIONS
    timing: TimingOptions = field(default_factory=TimingOptions)
    settings: dict[str, Any] = field(default_factory=dict)  # as written in the file; checked against the backend's
    source: str = ""

    def create_backend(
        self, overrides: dict[str, Any] | None = None, source: str | None = None, **timing_overrides: int | None
    ) -> Backend:
        """The profile's backend; ``overrides``: settings that win over the profile's (flags, a LUT's)."""
        timing = self.timing.to_dict()
        timing.update({k: v for k, v in timing_overrides.items() if v is not None})
        where = f"{self.source} settings" + (f", {source}" if source and overrides else "")
        return backend_class(self.backend)(TimingOptions(**timing), where, **{**self.settings, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "backend": self.backend,
            "width_mult": self.width_mult,
            "resolutions": list(self.resolutions),
            "timing": self.timing.to_dict(),
            "settings": dict(self.settings),
            "source": self.source,
        }


def _builtin_dir():
    return resources.files("ofa_deploy.device_profiles")


def _yaml_files(folder: Any) -> dict[str, Any]:
    """``NAME -> file`` of the ``NAME.yaml`` files in a package folder."""
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name)
    return {p.name[: -len(".yaml")]: p for p in files}


def builtin_profile_names() -> list[str]:
    """Names of the profiles shipped in ``ofa_deploy.device_profiles``, sorted."""
    return sorted(_yaml_files(_builtin_dir()))


@dataclass(frozen=True)
class NamedProfile:
    """A profile known by name: its YAML file and the package that ships it."""

    name: str
    file: Any  # an importlib.resources Traversable
    provider: str  # "ofa-deploy", or the plugin's distribution and version

    @property
    def builtin(self) -> bool:
        return self.provider == TOOLKIT_DISTRIBUTION

    @property
    def source(self) -> str:
        return f"device_profiles/{self.name}.yaml" if self.builtin else f"{self.name}.yaml of {self.provider}"


@cache
def named_profiles() -> dict[str, NamedProfile]:
    """Every profile known by name: the built-in ones, then those plugins ship (clashes refused)."""
    found = {name: NamedProfile(name, f, TOOLKIT_DISTRIBUTION) for name, f in _yaml_files(_builtin_dir()).items()}
    for ep in entry_points_in(PROFILE_ENTRY_POINT_GROUP):
        provider = provider_of(ep)
        try:
            files = _yaml_files(resources.files(ep.value))
        except Exception as exc:  # a missing or broken package: its profiles are not there, the rest are
            log.warning("device profiles of %s (%s) cannot be read (%s); skipped", provider, ep.value, exc)
            continue
        for name, file in files.items():
            if name in found:
                log.warning(
                    "device profile '%s' from %s is refused: the name is already taken by %s",
                    name,
                    provider,
                    "a built-in profile of ofa-deploy" if found[name].builtin else found[name].provider,
                )
                continue
            found[name] = NamedProfile(name, file, provider)
    return found


def profile_names() -> list[str]:
    """Names of every profile known by name (built-in and from plugins), sorted."""
    return sorted(named_profiles())


def _check_keys(mapping: dict, source: str, where: str) -> None:
    """YAML allows any key (numbers, null, lists): a profile's keys are names."""
    for key in mapping:
        if not isinstance(key, str):
            raise BadInputError(f"{source}: {where}key {short_repr(key)} is not a name (a string)")


def parse_profile(data: Any, source: str) -> DeviceProfile:
    """A profile from its parsed YAML, every key, setting and resolution checked; BadInputError naming ``source``."""
    if not isinstance(data, dict):
        raise BadInputError(f"{source}: a device profile must be a YAML mapping")
    _check_keys(data, source, "")
    unknown = set(data) - _KEYS
    if unknown:
        raise BadInputError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    for required in ("name", "backend"):
        if not data.get(required):
            raise BadInputError(f"{source}: device profile needs '{required}'")
    for name in ("name", "backend", "description"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise BadInputError(f"{source}: '{name}' must be a string, got {short_repr(data[name])}")
    for name in ("name", "backend"):  # they appear in messages and commands: one printable line
        if not data[name].isprintable():
            raise BadInputError(f"{source}: '{name}' is {short_repr(data[name])}, not a name on one line")
    timing = data.get("timing") or {}
    if isinstance(timing, dict):
        _check_keys(timing, source, "'timing' ")
    timing = TimingOptions.from_dict(timing, source)
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise BadInputError(f"{source}: 'settings' must be a mapping")
    _check_keys(settings, source, "'settings' ")
    try:
        cls = backend_class(str(data["backend"]))
    except BadInputError as exc:
        raise BadInputError(f"{source}: {exc}") from None
    parse_settings(cls.Settings, settings, f"{source}: backend '{data['backend']}'")
    resolutions = data.get("resolutions", list(RESOLUTIONS))
    if resolutions == "all":
        resolutions = list(RESOLUTIONS)
    if not isinstance(resolutions, list):
        raise BadInputError(f"{source}: 'resolutions' must be a list or 'all'")
    try:
        res = check_resolutions(resolutions)
    except BadInputError as exc:
        raise BadInputError(f"{source}: {exc}") from None
    return DeviceProfile(
        name=str(data["name"]),
        description=data.get("description") or "",
        backend=str(data["backend"]),
        width_mult=check_width_mult(data.get("width_mult", 1.0), source),
        resolutions=res,
        timing=timing,
        settings=settings,
        source=source,
    )


def load_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name (built-in or a plugin's), or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise BadInputError(f"{path}: no such device profile file")
        source = str(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{source}: cannot read device profile ({exc})") from None
    else:
        entry = named_profiles().get(name_or_path)
        if entry is None:
            raise BadInputError(
                f"unknown device '{name_or_path}'{did_you_mean(name_or_path, profile_names())}; known "
                f"profiles: {', '.join(profile_names())} (or give a path to a profile YAML)"
            )
        try:
            text, source = entry.file.read_text(), entry.source
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{entry.source}: cannot read device profile ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # also: a 4300-digit int, nesting too deep
        first = str(exc).strip().splitlines()
        raise BadInputError(f"{source}: invalid YAML ({first[0] if first else type(exc).__name__})") from None
    return parse_profile(data, source)


def default_profile_for(backend: str) -> DeviceProfile | None:
    """The profile a backend names as its default (a plugin's may name its own), else the first built-in
    profile (by name) for it; a plugin's profiles are used only when named."""
    preferred = getattr(backend_class(backend), "default_profile", None)
    if preferred:
        return load_profile(preferred)
    for name in builtin_profile_names():
        profile = load_profile(name)
        if profile.backend == backend:
            return profile
    return None
