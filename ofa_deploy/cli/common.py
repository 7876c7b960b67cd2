"""Argument helpers shared by the verbs that reach a target."""

from __future__ import annotations

import argparse
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ofa_deploy.backend.host import busy_warning
from ofa_deploy.backend.interface import Backend, CliOption
from ofa_deploy.backend.profiles import DeviceProfile, default_profile_for, load_profile
from ofa_deploy.backend.quantization import PRECISIONS
from ofa_deploy.backend.registry import backend_class, create_backend, loadable_backends
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.errors import BadInputError
from ofa_deploy.space.arch import RESOLUTIONS, WIDTH_MULTS, check_resolutions, check_width_mult

log = logging.getLogger("ofa_deploy")
_REFUSED_FLAGS: set[tuple[str, str]] = set()
_BOUNDS = "bounded_flags_"  # the namespace attribute listing a verb's bounded flags


# ---------------------------------------------------------------------- numeric flags and their ranges


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Bound:
    """The range a numeric flag accepts. It is the flag's argparse ``type`` (parsing only: a value
    that is no number at all is argparse's usage error), and :func:`check_bounds` checks the range
    before the verb does any work: one line naming the flag, the range and the value (exit 2)."""

    kind: type = int  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself excluded
    high_open: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"greater than {_number(self.low)}" if self.low_open else f"at least {_number(self.low)}")
        if self.high is not None:
            parts.append(f"less than {_number(self.high)}" if self.high_open else f"at most {_number(self.high)}")
        noun = "an integer" if self.kind is int else "a finite number"
        return f"{noun}, {' and '.join(parts)}" if parts else noun

    def short(self) -> str:
        """The range as ``--help`` shows it: ``4..100000``, ``> 0``, ``0 < x < 1``."""
        low = None if self.low is None else _number(self.low)
        high = None if self.high is None else _number(self.high)
        if low is not None and high is not None:
            if not self.low_open and not self.high_open:
                return f"{low}..{high}"
            return f"{low} {'<' if self.low_open else '<='} x {'<' if self.high_open else '<='} {high}"
        if low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'<' if self.high_open else '<='} {high}" if high is not None else "any"

    def parse_one(self, text: str) -> Any:
        try:
            return self.kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {self.describe()}") from None

    def __call__(self, text: str) -> Any:
        return self.parse_one(text)

    def valid(self, value: Any) -> bool:
        if self.kind is float and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, flag: str, value: Any) -> None:
        if not self.valid(value):
            raise BadInputError(f"{flag} must be {self.describe()}; got {_number(value)}")


@dataclass(frozen=True)
class BoundList(Bound):
    """A comma-separated list whose every value is in the range (``--budgets 10,20``, ``--hidden 400,400``)."""

    def describe(self) -> str:
        return f"comma-separated, each {super().describe()}"

    def short(self) -> str:
        return f"each {super().short()}"

    def __call__(self, text: str) -> tuple:
        values = tuple(self.parse_one(part) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {self.describe()}")
        return values

    def check(self, flag: str, value: Any) -> None:
        for one in value:
            if not self.valid(one):
                raise BadInputError(f"{flag} values must each be {super().describe()}; got {_number(one)}")


@dataclass(frozen=True)
class WidthMultBound(Bound):
    """``--width-mult``: one of the space's width multipliers (1.0, 1.2), not a range."""

    kind: type = float

    def describe(self) -> str:
        return " or ".join(str(w) for w in WIDTH_MULTS)

    def short(self) -> str:
        return self.describe()

    def check(self, flag: str, value: Any) -> None:
        check_width_mult(value, flag)


THREADS = Bound(int, 1, 1024)
ROUNDS = Bound(int, 1, 10_000)  # --rounds and --runs
INSTANCES = Bound(int, 1, 100)
WARMUP = Bound(int, 0, 10_000)  # benchmark --model --warmup
INTERLEAVE = Bound(int, 1, 1024)
SEED = Bound(int, 0, 2**32 - 1)
POPULATION = Bound(int, 4, 100_000)
GENERATIONS = Bound(int, 1, 100_000)
SAMPLES = Bound(int, 4, 10_000)
EPOCHS = Bound(int, 1, 100_000)
CALIB_IMAGES = Bound(int, 1, 100_000)  # compile --calib-images
POSITIVE = Bound(float, 0.0, low_open=True)  # latency limits, budgets, FLOPs/params/memory limits
SHARE = Bound(float, 0.0, 1.0, low_open=True, high_open=True)
LAYER_SIZES = BoundList(int, 1, 100_000)
BUDGETS = BoundList(float, 0.0, low_open=True)
WIDTH_MULT = WidthMultBound()


def add_bounded(p: argparse.ArgumentParser, flag: str, bound: Bound, help: str = "", **kwargs: Any) -> None:
    """``p.add_argument(flag, type=bound)`` with the range in ``--help``, checked by :func:`checked`."""
    text = f"{help}; allowed: {bound.short()}" if help else f"allowed: {bound.short()}"
    action = p.add_argument(flag, type=bound, help=text, **kwargs)
    bounds = dict(p.get_default(_BOUNDS) or {})
    bounds[action.dest] = (flag, bound)
    p.set_defaults(**{_BOUNDS: bounds})


def check_bounds(args: argparse.Namespace) -> None:
    """Every bounded flag given (or defaulted) in its range, else one line naming it (exit 2)."""
    for dest, (flag, bound) in (getattr(args, _BOUNDS, None) or {}).items():
        value = getattr(args, dest, None)
        for one in value if isinstance(value, list) else [value]:  # action="append" flags: every value
            if one is not None:
                bound.check(flag, one)


def checked(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A verb's ``run`` that first checks its bounded flags, before any work (``set_defaults(run=checked(run))``)."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        check_bounds(args)
        return run(args)

    return wrapper


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
    """The flags declared by the backends (e.g. adb's ``--serial``), listed under their backend in
    ``--help``; nothing backend-specific here."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    owned = [(", ".join(name for name, _ in owners), flag, owners[0][1]) for flag, owners in backend_options().items()]
    for names, flag, option in sorted(owned):
        if names not in groups:
            first = names.split(", ")[0]
            groups[names] = p.add_argument_group(f"{names} flags (with --backend {first} or its profiles)")
        try:
            groups[names].add_argument(
                flag,
                dest=_dest(option),
                type=option.type,
                metavar=option.metavar,
                help=option.help + (" (repeatable where several are used)" if option.repeatable else ""),
                **({"action": "append"} if option.repeatable else {}),
            )
        except (argparse.ArgumentError, ValueError) as exc:  # e.g. a plugin declaring --out: skip it, keep the CLI
            if (names, flag) not in _REFUSED_FLAGS:
                _REFUSED_FLAGS.add((names, flag))
                log.warning("backend %s: flag %s ignored (%s)", names, flag, exc)


def add_target_args(p: argparse.ArgumentParser, backend_required: bool = False) -> None:
    """``--backend``, ``--device``, the timing flags and every backend's flags: how a verb names its target."""
    p.add_argument("--backend", required=backend_required, help="backend name (see `ofa-deploy devices`)")
    p.add_argument("--device", help="device profile name or YAML path (sets backend, timing and settings)")
    add_precision_arg(p)
    add_timing_args(p)
    add_backend_flags(p)


def add_precision_arg(p: argparse.ArgumentParser) -> None:
    """``--precision``: the numeric precision the target runs (a setting of every built-in backend)."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="numeric precision the target runs (default: the device profile's, else fp32; int8 models are "
        "quantized after training, see docs/int8.md; which backend runs which: `ofa-deploy devices --json`)",
    )


def add_timing_args(p: argparse.ArgumentParser, instances_default: str = "the profile's") -> None:
    """``--threads``, ``--rounds``, ``--runs``, ``--instances``, ``--interleave``: bounded, checked before any work."""
    add_bounded(p, "--threads", THREADS, "inference threads (default: the profile's)")
    add_bounded(p, "--rounds", ROUNDS, "timing rounds per model (default: the profile's)")
    add_bounded(p, "--runs", ROUNDS, "timed runs per round (default: the profile's)")
    add_bounded(
        p, "--instances", INSTANCES, f"model instances the rounds alternate between (default {instances_default})"
    )
    add_bounded(
        p,
        "--interleave",
        INTERLEAVE,
        "models loaded together and timed in interleaved rounds on a host runtime (default 128; 1: one at a time)",
    )


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
        if isinstance(value, list):  # a repeatable flag: a verb using one target takes exactly one value
            if len(value) > 1:
                raise BadInputError(f"{flag} given {len(value)} times; this command uses one target (give it once)")
            value = value[0]
        given[mine[0].setting] = value
        flags.append(flag)
    precision = getattr(args, "precision", None)
    if precision is not None:
        if "precision" not in backend_class(backend).Settings.describe():
            raise BadInputError(f"--precision {precision}: backend '{backend}' has no precision setting")
        given["precision"] = precision
        flags.append("--precision")
    return given, flags


def run_bundle_precision(args: argparse.Namespace, settings: Any, where: str) -> None:
    """A bundle runs the precision it was compiled for: configure the target for it (``args.precision``),
    or refuse a ``--precision`` that says otherwise (exit 2)."""
    compiled_at = (settings.get("precision") if isinstance(settings, dict) else None) or "fp32"
    given = getattr(args, "precision", None)
    if given is not None and given != compiled_at:
        raise BadInputError(f"{where} was compiled for {compiled_at}, not {given}: compile it with --precision {given}")
    if compiled_at != "fp32":  # an fp32 bundle leaves the target as configured (plugins may have no precision)
        args.precision = compiled_at


def resolve_profile(args: argparse.Namespace) -> DeviceProfile | None:
    """``--device``'s profile, else ``--backend``'s default one (None if it has none); BadInputError without either."""
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


def target_for_record(
    args: argparse.Namespace, backend: str | None, settings: Any, source: str
) -> tuple[DeviceProfile | None, dict[str, Any] | None]:
    """The target for re-running what a LUT or a bundle (``source``) recorded: the device profile the
    flags name, else the record's ``backend``; and the record's measurement settings (see
    :func:`recorded_settings`) when that target runs the record's backend (else None: another
    backend's settings mean nothing to it)."""
    if not args.backend and not args.device and backend:
        args.backend = backend
    profile = resolve_profile(args)
    chosen = profile.backend if profile is not None else args.backend
    recorded = recorded_settings(backend, settings, source) if backend and chosen == backend else None
    return profile, recorded


def make_backend(
    args: argparse.Namespace,
    profile: DeviceProfile | None,
    base: TimingOptions | None = None,
    base_settings: dict[str, Any] | None = None,
) -> Backend:
    """The backend with timing from the command line over ``base`` (e.g. the LUT's) over the
    profile's, and settings from the backend's flags over ``base_settings`` (those a LUT or a
    bundle was made with: its measurement settings only, see :func:`recorded_settings`) over the
    profile's. Local settings (paths, serials, keys, directories, connection) come only from the
    flags, the profile and the environment. Use it as a context manager so a remote target is
    always released."""
    given = {
        "threads": getattr(args, "threads", None),
        "rounds": getattr(args, "rounds", None),
        "runs": getattr(args, "runs", None),
        "instances": getattr(args, "instances", None),
        "interleave": getattr(args, "interleave", None),
    }
    start = base or (profile.timing if profile is not None else TimingOptions())
    timing = {**start.to_dict(), **{k: v for k, v in given.items() if v is not None}}
    name = profile.backend if profile is not None else args.backend
    flags, flag_names = flag_settings(args, name)
    applicable = backend_class(name).Settings.from_record(base_settings)[0] if base_settings else {}  # no local one
    recorded = {k: v for k, v in applicable.items() if v is not None}
    if profile is not None and getattr(args, "device", None):  # a profile the user names wins over the record
        recorded = {k: v for k, v in recorded.items() if k not in profile.settings}
    overrides = {**recorded, **flags}
    source = f"backend '{name}'" + (f" ({', '.join(sorted(flag_names))})" if flag_names else "")
    if profile is not None:
        return profile.create_backend(overrides, source=source, **timing)
    return create_backend(name, TimingOptions(**timing), settings_source=source, **overrides)


def recorded_settings(backend: str, recorded: Any, source: str) -> dict[str, Any] | None:
    """The settings a LUT or a bundle (``source``) recorded that may configure ``backend`` now: its
    measurement settings. Local ones (paths, serials, keys, directories, connection: recorded by
    older versions, or planted) are dropped, with one warning naming those that would have changed
    something."""
    if not isinstance(recorded, dict):
        return None
    kept, ignored = backend_class(backend).Settings.from_record(recorded)
    if ignored:
        log.warning(
            "warning: %s records local setting(s) %s; ignored (they come only from your flags, the device "
            "profile and the environment)",
            source,
            ", ".join(ignored),
        )
    return kept


def add_allow_target_mismatch(p: argparse.ArgumentParser, what: str) -> None:
    """``--allow-target-mismatch``: go on with ``what`` made on another target; the record notes it."""
    p.add_argument(
        "--allow-target-mismatch",
        action="store_true",
        help=f"use {what} made on another target (another device, backend, runtime major version, thread count "
        "or precision) anyway; the record notes it",
    )


def add_verify_key_flag(p: argparse.ArgumentParser) -> None:
    """``--verify-key``: refuse a bundle unless its Ed25519 signature verifies (SECURITY.md)."""
    p.add_argument(
        "--verify-key",
        metavar="KEY.pub.pem",
        help="Ed25519 public key (PEM): refuse the bundle unless its signature verifies",
    )


def warn_if_busy(backend: Backend) -> None:
    """One warning line when this machine's load would bias timings taken on it (after the backend's
    runtime is known to be usable: a missing runtime is the one error line, with no warning before it)."""
    if not backend.times_on_host:
        return
    backend.check()  # host runtimes: cheap, and it raises the missing-runtime error (exit 3)
    busy = busy_warning()
    if busy:
        log.warning("warning: %s", busy)


def add_cluster_flag(p: argparse.ArgumentParser, work: str) -> None:
    """``--cluster ADDRESS``: run ``work`` on the Ray hosts the devices are attached to (docs/fleet.md)."""
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help=f"Ray cluster address (e.g. head:6379): {work} on the hosts the devices are attached to (docs/fleet.md)",
    )


def repeated_flag(args: argparse.Namespace, flag: str) -> list[Any]:
    """Every value of a repeatable backend flag (``--serial S1 --serial S2``); empty when not given."""
    owners = backend_options().get(flag)
    value = getattr(args, _dest(owners[0][1]), None) if owners else None
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def with_flag(args: argparse.Namespace, flag: str, value: Any) -> argparse.Namespace:
    """A copy of ``args`` with one backend flag set to a single value (one target of several)."""
    copy = argparse.Namespace(**vars(args))
    owners = backend_options().get(flag)
    if owners:
        setattr(copy, _dest(owners[0][1]), value)
    return copy
