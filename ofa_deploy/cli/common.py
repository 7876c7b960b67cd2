"""Argument helpers shared by several verbs."""

from __future__ import annotations

import argparse
import sys

from ofa_deploy.backend.host import busy_warning
from ofa_deploy.backend.interface import Backend, TimingOptions, create_backend
from ofa_deploy.backend.profiles import DeviceProfile, default_profile_for, load_profile
from ofa_deploy.errors import BadInputError
from ofa_deploy.space.arch import RESOLUTIONS, check_resolutions


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


def add_target_args(p: argparse.ArgumentParser, backend_required: bool = False) -> None:
    p.add_argument("--backend", required=backend_required, help="backend name (see `ofa-deploy devices`)")
    p.add_argument("--device", help="device profile name or YAML path (sets backend, timing and settings)")
    p.add_argument("--threads", type=int, help="inference threads (default: the profile's)")
    p.add_argument("--rounds", type=int, help="timing rounds per model (default: the profile's)")
    p.add_argument("--runs", type=int, help="timed runs per round (default: the profile's)")
    p.add_argument("--instances", type=int, help="model instances the rounds alternate between")


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


def make_backend(args: argparse.Namespace, profile: DeviceProfile | None, base: TimingOptions | None = None) -> Backend:
    """The backend with timing from the command line over ``base`` (e.g. the LUT's) over the profile's."""
    given = {
        "threads": args.threads,
        "rounds": args.rounds,
        "runs": args.runs,
        "instances": getattr(args, "instances", None),
    }
    start = base or (profile.timing if profile is not None else TimingOptions())
    timing = {**vars(start), **{k: v for k, v in given.items() if v is not None}}
    if profile is not None:
        return profile.create_backend(**timing)
    return create_backend(args.backend, TimingOptions(**timing))


def warn_if_busy(backend: Backend) -> None:
    """One warning line when this machine's load would bias timings taken on it."""
    busy = busy_warning() if backend.times_on_host else None
    if busy:
        print(f"warning: {busy}", file=sys.stderr)
