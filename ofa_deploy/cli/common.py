"""Argument helpers shared by the verbs that reach a target."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ofa_deploy.backend.host import busy_warning
from ofa_deploy.backend.interface import Backend, CliOption
from ofa_deploy.backend.profiles import DeviceProfile, default_profile_for, load_profile
from ofa_deploy.backend.registry import create_backend, loadable_backends
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.errors import BadInputError
from ofa_deploy.space.arch import RESOLUTIONS, check_resolutions

log = logging.getLogger("ofa_deploy")
_REFUSED_FLAGS: set[tuple[str, str]] = set()


def parse_resolutions(text: str) -> tuple[int, ...]:
    """``160,176`` or ``all``."""
    if text.strip().lower() == "all":
        return RESOLUTIONS
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInputError(f"--resolutions: '{text}' is not a comma-separated list of integers or 'all'") from None
    try:
        return check_resolutions(values)
    except BadInputError as exc:
        raise BadInputError(f"--resolutions: {exc}") from None


def _dest(option: CliOption) -> str:
    return "backend_opt_" + option.flag.lstrip("-").replace("-", "_")


def backend_options() -> dict[str, list[tuple[str, CliOption]]]:
    """flag -> [(backend, option)]: the connection flags every installed backend declares."""
    flags: dict[str, list[tuple[str, CliOption]]] = {}
    for name, cls in loadable_backends().items():
        for option in cls.cli_options:
            flags.setdefault(option.flag, []).append((name, option))
    return flags


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    """The flags declared by the backends (e.g. adb's ``--serial``); nothing backend-specific here."""
    for flag, owners in sorted(backend_options().items()):
        option = owners[0][1]
        names = ", ".join(name for name, _ in owners)
        try:
            p.add_argument(
                flag,
                dest=_dest(option),
                type=option.type,
                metavar=option.metavar,
                help=f"[{names}] {option.help}",
            )
        except (argparse.ArgumentError, ValueError) as exc:  # e.g. a plugin declaring --out: skip it, keep the CLI
            if (names, flag) not in _REFUSED_FLAGS:
                _REFUSED_FLAGS.add((names, flag))
                log.warning("backend %s: flag %s ignored (%s)", names, flag, exc)


def add_target_args(p: argparse.ArgumentParser, backend_required: bool = False) -> None:
    p.add_argument("--backend", required=backend_required, help="backend name (see `ofa-deploy devices`)")
    p.add_argument("--device", help="device profile name or YAML path (sets backend, timing and settings)")
    p.add_argument("--threads", type=int, help="inference threads (default: the profile's)")
    p.add_argument("--rounds", type=int, help="timing rounds per model (default: the profile's)")
    p.add_argument("--runs", type=int, help="timed runs per round (default: the profile's)")
    p.add_argument("--instances", type=int, help="model instances the rounds alternate between")
    add_backend_flags(p)


def flag_settings(args: argparse.Namespace, backend: str) -> tuple[dict[str, Any], list[str]]:
    """Settings given as backend flags, and those flags; a flag of another backend is refused (exit 2)."""
    given: dict[str, Any] = {}
    flags: list[str] = []
    for flag, owners in backend_options().items():
        value = getattr(args, _dest(owners[0][1]), None)
        if value is None:
            continue
        mine = [option for name, option in owners if name == backend]
        if not mine:
            raise BadInputError(f"{flag} is an option of backend {', '.join(n for n, _ in owners)}, not of '{backend}'")
        given[mine[0].setting] = value
        flags.append(flag)
    return given, flags


def resolve_profile(args: argparse.Namespace) -> DeviceProfile | None:
    if args.device:
        profile = load_profile(args.device)
        if args.backend and args.backend != profile.backend:
            raise BadInputError(
                f"--backend {args.backend} contradicts device profile '{profile.name}' (backend {profile.backend})"
            )
        return profile
    if not args.backend:
        raise BadInputError("give --backend NAME or --device PROFILE (see `ofa-deploy devices`)")
    return default_profile_for(args.backend)


def make_backend(
    args: argparse.Namespace,
    profile: DeviceProfile | None,
    base: TimingOptions | None = None,
    base_settings: dict[str, Any] | None = None,
) -> Backend:
    """The backend with timing from the command line over ``base`` (e.g. the LUT's) over the
    profile's, and settings from the backend's flags over ``base_settings`` (those a LUT or a
    bundle was made with) over the profile's. Use it as a context manager so a remote target is
    always released."""
    given = {
        "threads": getattr(args, "threads", None),
        "rounds": getattr(args, "rounds", None),
        "runs": getattr(args, "runs", None),
        "instances": getattr(args, "instances", None),
    }
    start = base or (profile.timing if profile is not None else TimingOptions())
    timing = {**start.to_dict(), **{k: v for k, v in given.items() if v is not None}}
    name = profile.backend if profile is not None else args.backend
    flags, flag_names = flag_settings(args, name)
    recorded = {k: v for k, v in (base_settings or {}).items() if v is not None}
    if profile is not None and getattr(args, "device", None):  # a profile the user names wins over the record
        recorded = {k: v for k, v in recorded.items() if k not in profile.settings}
    overrides = {**recorded, **flags}
    source = f"backend '{name}'" + (f" ({', '.join(sorted(flag_names))})" if flag_names else "")
    if profile is not None:
        return profile.create_backend(overrides, source=source, **timing)
    return create_backend(name, TimingOptions(**timing), settings_source=source, **overrides)


def warn_if_busy(backend: Backend) -> None:
    """One warning line when this machine's load would bias timings taken on it."""
    busy = busy_warning() if backend.times_on_host else None
    if busy:
        log.warning("warning: %s", busy)
