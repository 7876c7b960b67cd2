"""The OFA MobileNetV3 search space and its architecture type.

An architecture is the official OFA layout: 20 block slots (5 stages x 4), a kernel size and an
expand ratio per slot, a depth per stage and an input resolution. Slot ``j`` of stage ``s`` is
active iff ``j < d[s]``; values in inactive slots build nothing, so :meth:`Arch.canonical` resets
them and two archs that build the same network compare equal.

Single archs are immutable :class:`Arch` objects; whole populations are :class:`ArchBatch`
structs of numpy arrays, so the search can work on hundreds of candidates without Python loops.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.errors import BadInputError, InvalidArchError, short_repr

KERNEL_SIZES: tuple[int, ...] = (3, 5, 7)
EXPAND_RATIOS: tuple[int, ...] = (3, 4, 6)
DEPTHS: tuple[int, ...] = (2, 3, 4)
N_STAGES = 5
MAX_DEPTH = 4
N_BLOCKS = N_STAGES * MAX_DEPTH
RESOLUTIONS: tuple[int, ...] = tuple(range(128, 225, 4))
WIDTH_MULTS: tuple[float, ...] = (1.0, 1.2)

# What an inactive slot is normalised to in the canonical form (the smallest choice).
_CANONICAL_KS = KERNEL_SIZES[0]
_CANONICAL_E = EXPAND_RATIOS[0]
_SLOT_IN_STAGE = np.tile(np.arange(MAX_DEPTH), N_STAGES)  # position of each of the 20 slots in its stage

_FIELDS = ("ks", "e", "d", "r")


def _fail(field: str, message: str, source: str | None) -> InvalidArchError:
    where = f"{source}: " if source else ""
    return InvalidArchError(f"{where}arch field '{field}' {message}")


def _check_int_list(
    value: Any, field: str, length: int, allowed: tuple[int, ...], source: str | None
) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail(field, f"must be a list of {length} integers, got {type(value).__name__}", source)
    if len(value) != length:
        raise _fail(field, f"must have {length} entries, got {len(value)}", source)
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise _fail(field, f"entry {i} must be an integer, got {v!r}", source)
        if int(v) not in allowed:
            raise _fail(field, f"entry {i} is {v}; allowed values are {list(allowed)}", source)
    return tuple(int(v) for v in value)


def _check_resolution(value: Any, source: str | None, field: str = "r") -> int:
    if isinstance(value, (list, tuple)):  # official variant "r": [int]
        if len(value) != 1:
            raise _fail(field, f"as a list must hold exactly one resolution, got {len(value)}", source)
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _fail(field, f"must be an integer resolution, got {value!r}", source)
    if int(value) not in RESOLUTIONS:
        raise _fail(field, f"is {value}; allowed values are {RESOLUTIONS[0]}..{RESOLUTIONS[-1]} in steps of 4", source)
    return int(value)


@dataclass(frozen=True, eq=False)
class Arch:
    """One sub-network of the space. Validated on construction; equality ignores inactive slots."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", _check_int_list(self.ks, "ks", N_BLOCKS, KERNEL_SIZES, None))
        object.__setattr__(self, "e", _check_int_list(self.e, "e", N_BLOCKS, EXPAND_RATIOS, None))
        object.__setattr__(self, "d", _check_int_list(self.d, "d", N_STAGES, DEPTHS, None))
        object.__setattr__(self, "r", _check_resolution(self.r, None))

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Arch:
        """Read the Arch JSON (README, "Formats") and its official variants (``"r": [int]``,
        ``"image_size"``, ``"wid": null``); extra keys are ignored."""
        if not isinstance(data, Mapping):
            where = f"{source}: " if source else ""
            raise InvalidArchError(f"{where}an arch must be a JSON object with keys ks, e, d, r")
        if "r" in data:
            r_value, r_field = data["r"], "r"
        elif "image_size" in data:
            r_value, r_field = data["image_size"], "image_size"
        else:
            raise _fail("r", "is missing (give 'r' or 'image_size')", source)
        for field in ("ks", "e", "d"):
            if field not in data:
                raise _fail(field, "is missing", source)
        wid = data.get("wid")
        if wid is not None:
            raise _fail("wid", f"must be null (the MobileNetV3 space has no width choice), got {wid!r}", source)
        return cls(
            ks=_check_int_list(data["ks"], "ks", N_BLOCKS, KERNEL_SIZES, source),
            e=_check_int_list(data["e"], "e", N_BLOCKS, EXPAND_RATIOS, source),
            d=_check_int_list(data["d"], "d", N_STAGES, DEPTHS, source),
            r=_check_resolution(r_value, source, r_field),
        )

    def to_dict(self) -> dict[str, Any]:
        """The toolkit's Arch JSON: ``{"ks": [...], "e": [...], "d": [...], "r": int}``."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    def to_official_dict(self) -> dict[str, Any]:
        """The layout the official OFA tutorial code passes around (``"r": [int]``, ``"wid": None``)."""
        return {"wid": None, "ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": [self.r]}

    # ------------------------------------------------------------------ structure
    def is_active(self, block: int) -> bool:
        stage, slot = divmod(block, MAX_DEPTH)
        return slot < self.d[stage]

    def active_blocks(self) -> list[int]:
        """Indices (0..19) of the slots that build a block, in execution order."""
        return [b for b in range(N_BLOCKS) if self.is_active(b)]

    def canonical(self) -> Arch:
        """Same network, inactive slots reset to the smallest choice."""
        ks = tuple(k if self.is_active(b) else _CANONICAL_KS for b, k in enumerate(self.ks))
        e = tuple(x if self.is_active(b) else _CANONICAL_E for b, x in enumerate(self.e))
        return Arch(ks=ks, e=e, d=self.d, r=self.r)

    def _canonical_key(self) -> tuple:
        c = self.canonical()
        return (c.ks, c.e, c.d, c.r)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return self._canonical_key() == other._canonical_key()

    def __hash__(self) -> int:
        return hash(self._canonical_key())

    def stable_hash(self) -> str:
        """A hash of the canonical form that is the same in every process and version (16 hex)."""
        text = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_resolution(self, r: int) -> Arch:
        return Arch(ks=self.ks, e=self.e, d=self.d, r=r)

    def __str__(self) -> str:
        stages = []
        for s in range(N_STAGES):
            blocks = [f"k{self.ks[s * MAX_DEPTH + j]}e{self.e[s * MAX_DEPTH + j]}" for j in range(self.d[s])]
            stages.append(" ".join(blocks))
        return f"r{self.r} | " + " | ".join(stages)


# ---------------------------------------------------------------------- files


def load_arch_file(path: str | Path) -> tuple[Arch, dict[str, Any]]:
    """Read an Arch JSON file; returns the arch and the whole JSON object (for extra keys)."""
    path = Path(path)
    from ofa_deploy.inputs import ARCH_FILE_LIMIT, read_input_text

    text = read_input_text(path, "arch file", ARCH_FILE_LIMIT)  # a regular file within the limit
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting deeper than Python's stack
        raise InvalidArchError(f"{path}: not a readable arch file ({type(exc).__name__}: {str(exc)[:80]})") from None
    return Arch.from_dict(data, source=str(path)), data


def width_mult_from(data: Mapping[str, Any], override: float | None, source: str) -> float:
    """The width multiplier: ``override`` if given, else the file's ``width_mult`` key, else 1.0."""
    value = override if override is not None else data.get("width_mult", 1.0)
    return check_width_mult(value, source)


def check_width_mult(value: Any, source: str = "width multiplier") -> float:
    """``value`` as one of the space's width multipliers (1.0, 1.2); BadInputError naming ``source`` otherwise."""
    try:
        w = float(value)
    except (TypeError, ValueError, OverflowError):
        raise BadInputError(f"{source}: width multiplier {short_repr(value)} is not a number") from None
    for allowed in WIDTH_MULTS:
        if abs(w - allowed) < 1e-9:
            return allowed
    raise BadInputError(f"{source}: width multiplier {short_repr(value)} is not one of {list(WIDTH_MULTS)}")


def save_arch_file(path: str | Path, arch: Arch, **extra: Any) -> None:
    """Write the Arch JSON (plus extra keys such as predicted metrics)."""
    data = arch.to_dict()
    data.update(extra)
    from ofa_deploy.files import atomic_write_json

    atomic_write_json(Path(path), data, indent=2)


# ---------------------------------------------------------------------- single-arch operators


def check_resolutions(resolutions: Iterable[int]) -> tuple[int, ...]:
    """The distinct resolutions, sorted, each checked against the space; BadInputError for a bad or missing one."""
    values = tuple(resolutions)
    for r in values:  # before the cache: a nested list from a file is not hashable
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise _fail("r", f"must be an integer resolution, got {short_repr(r)}", None)
    return _checked_resolutions(values)


@lru_cache(maxsize=64)
def _checked_resolutions(resolutions: tuple) -> tuple[int, ...]:
    res = tuple(sorted({_check_resolution(r, None) for r in resolutions}))
    if not res:
        raise BadInputError("at least one resolution is needed")
    return res


def sample_arch(rng: np.random.Generator, resolutions: Sequence[int] = RESOLUTIONS) -> Arch:
    """One arch drawn uniformly per gene, at one of ``resolutions``."""
    return sample_batch(rng, 1, resolutions).to_archs()[0]


def mutate_arch(
    arch: Arch, rng: np.random.Generator, prob: float = 0.1, resolutions: Sequence[int] = RESOLUTIONS
) -> Arch:
    """The official OFA mutation: each slot's (ks, e), each depth and the resolution are
    resampled with probability ``prob``."""
    return mutate_batch(ArchBatch.from_archs([arch]), rng, prob, resolutions).to_archs()[0]


def crossover_arch(a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    """Uniform crossover: every gene comes from either parent with probability 1/2."""
    return crossover_batch(ArchBatch.from_archs([a]), ArchBatch.from_archs([b]), rng).to_archs()[0]


# ---------------------------------------------------------------------- populations


@dataclass(frozen=True)
class ArchBatch:
    """A population as arrays: ks, e (N, 20), d (N, 5), r (N,), all int64."""

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])

    @classmethod
    def from_archs(cls, archs: Sequence[Arch]) -> ArchBatch:
        if not archs:
            return cls.empty()
        return cls(
            ks=np.array([a.ks for a in archs], dtype=np.int64),
            e=np.array([a.e for a in archs], dtype=np.int64),
            d=np.array([a.d for a in archs], dtype=np.int64),
            r=np.array([a.r for a in archs], dtype=np.int64),
        )

    @classmethod
    def empty(cls) -> ArchBatch:
        z = np.zeros((0, N_BLOCKS), dtype=np.int64)
        return cls(ks=z, e=z.copy(), d=np.zeros((0, N_STAGES), dtype=np.int64), r=np.zeros(0, dtype=np.int64))

    def to_archs(self) -> list[Arch]:
        return [
            Arch(ks=tuple(k), e=tuple(x), d=tuple(dd), r=int(r))
            for k, x, dd, r in zip(self.ks.tolist(), self.e.tolist(), self.d.tolist(), self.r.tolist())
        ]

    def __getitem__(self, index: Any) -> ArchBatch:
        if not (isinstance(index, np.ndarray) and index.dtype.kind == "i"):
            index = np.atleast_1d(np.arange(len(self))[index])
        return ArchBatch(ks=self.ks[index], e=self.e[index], d=self.d[index], r=self.r[index])

    def active_mask(self) -> np.ndarray:
        """(N, 20) bool: which slots build a block."""
        return _SLOT_IN_STAGE[None, :] < np.repeat(self.d, MAX_DEPTH, axis=1)

    def canonical(self) -> ArchBatch:
        mask = self.active_mask()
        return ArchBatch(
            ks=np.where(mask, self.ks, _CANONICAL_KS),
            e=np.where(mask, self.e, _CANONICAL_E),
            d=self.d.copy(),
            r=self.r.copy(),
        )

    def concat(self, other: ArchBatch) -> ArchBatch:
        return ArchBatch(
            ks=np.concatenate([self.ks, other.ks]),
            e=np.concatenate([self.e, other.e]),
            d=np.concatenate([self.d, other.d]),
            r=np.concatenate([self.r, other.r]),
        )

    def unique_rows(self) -> np.ndarray:
        """Indices of the first occurrence of each distinct network (canonical form)."""
        c = self.canonical()
        table = np.concatenate([c.ks, c.e, c.d, c.r[:, None]], axis=1)
        _, first = np.unique(table, axis=0, return_index=True)
        return np.sort(first)


def sample_batch(rng: np.random.Generator, n: int, resolutions: Sequence[int] = RESOLUTIONS) -> ArchBatch:
    """``n`` archs drawn uniformly and independently per gene."""
    res = np.asarray(check_resolutions(resolutions), dtype=np.int64)
    return ArchBatch(
        ks=np.asarray(KERNEL_SIZES, dtype=np.int64)[rng.integers(0, len(KERNEL_SIZES), (n, N_BLOCKS))],
        e=np.asarray(EXPAND_RATIOS, dtype=np.int64)[rng.integers(0, len(EXPAND_RATIOS), (n, N_BLOCKS))],
        d=np.asarray(DEPTHS, dtype=np.int64)[rng.integers(0, len(DEPTHS), (n, N_STAGES))],
        r=res[rng.integers(0, len(res), n)],
    )


def mutate_batch(
    batch: ArchBatch, rng: np.random.Generator, prob: float = 0.1, resolutions: Sequence[int] = RESOLUTIONS
) -> ArchBatch:
    """Vectorised official mutation over a whole batch."""
    fresh = sample_batch(rng, len(batch), resolutions)
    n = len(batch)
    block_hit = rng.random((n, N_BLOCKS)) < prob  # ks and e of a slot are resampled together
    depth_hit = rng.random((n, N_STAGES)) < prob
    res_hit = rng.random(n) < prob
    return ArchBatch(
        ks=np.where(block_hit, fresh.ks, batch.ks),
        e=np.where(block_hit, fresh.e, batch.e),
        d=np.where(depth_hit, fresh.d, batch.d),
        r=np.where(res_hit, fresh.r, batch.r),
    )


def crossover_batch(a: ArchBatch, b: ArchBatch, rng: np.random.Generator) -> ArchBatch:
    """Vectorised uniform crossover of row i of ``a`` with row i of ``b``."""
    n = len(a)

    def pick(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(rng.random(x.shape) < 0.5, x, y)

    return ArchBatch(ks=pick(a.ks, b.ks), e=pick(a.e, b.e), d=pick(a.d, b.d), r=np.where(rng.random(n) < 0.5, a.r, b.r))


def largest_arch(r: int = RESOLUTIONS[-1]) -> Arch:
    """The largest sub-network (kernel 7, expand 6, depth 4 everywhere) at resolution ``r``."""
    return Arch(ks=(7,) * N_BLOCKS, e=(6,) * N_BLOCKS, d=(4,) * N_STAGES, r=r)


def smallest_arch(r: int = RESOLUTIONS[0]) -> Arch:
    """The smallest sub-network (kernel 3, expand 3, depth 2 everywhere) at resolution ``r``."""
    return Arch(ks=(3,) * N_BLOCKS, e=(3,) * N_BLOCKS, d=(2,) * N_STAGES, r=r)
