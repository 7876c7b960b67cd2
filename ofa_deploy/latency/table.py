"""Latency lookup tables: the official per-resolution YAML files and the toolkit's single file.

The official files (``160_lookup_table.yaml`` ...) map a key to ``{count, mean, std}`` in
milliseconds, one file per resolution; they are read and written unchanged, and predictions from
them use ``mean`` exactly as the official code does. Tables are kept per resolution because the
same key (e.g. ``Logits-...``) is measured separately in each official file, with different
values. The toolkit's own file is JSON holding all resolutions plus metadata (device, backend,
runtime and version, threads, width multiplier, resolutions, date, toolkit version, the timing
reference) and optionally a calibration fitted by ``validate``.

Every file is validated once, on load (each failure one line naming the file, the key and the
value, exit 2): latencies finite and >= 0, ``std`` finite and >= 0, ``count`` a non-negative
integer, resolutions of the space, one width multiplier per table (and per directory of official
files, every file of which is read), a calibration with a finite slope > 0 and a finite intercept
whose prediction of the table's fastest sub-network stays > 0. Completeness is checked where it
matters: :meth:`LatencyTable.check_complete` (search, validate) names a missing key and the
``profile ... --resume`` command that completes an interrupted table.

Prediction is a gather: for each resolution the table is laid out as an array
``[slot 0..19, kernel, expand]`` plus a fixed part (stem and head), so a whole population is
predicted with numpy indexing and no per-arch Python loop.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ofa_deploy.backend.fingerprint import IDENTITY_KEYS
from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_json, atomic_write_text
from ofa_deploy.inputs import LUT_FILE_LIMIT, read_input_text
from ofa_deploy.latency.intervals import LatencyIntervals
from ofa_deploy.latency.metadata import OFFICIAL, TableMetadata, finite_number, shown
from ofa_deploy.space.arch import (
    DEPTHS,
    EXPAND_RATIOS,
    KERNEL_SIZES,
    MAX_DEPTH,
    N_BLOCKS,
    N_STAGES,
    RESOLUTIONS,
    Arch,
    ArchBatch,
    check_width_mult,
)
from ofa_deploy.space.geometry import final_feature_size, width_mult_for_first_conv
from ofa_deploy.space.ops import FIRST_CONV, arch_ops, head_ops, resolution_ops, stage_block_ops, stem_ops
from ofa_deploy.space.slot_table import SlotTable

FORMAT = "ofa-deploy-lut/1"
OFFICIAL_FILE = re.compile(r"^(\d{1,4})_lookup_table\.yaml$")
_K_INDEX = {k: i for i, k in enumerate(KERNEL_SIZES)}
_E_INDEX = {e: i for i, e in enumerate(EXPAND_RATIOS)}
_LATENCY_FIELDS = ("mean", "median", "min", "p90", "p99", "estimate", "raw_estimate")  # ms, >= 0 (0 is fine)
_OPTIONAL_FIELDS = ("reference_ms", "round_spread")  # null, or a finite number >= 0
_REVALIDATE = "re-run `ofa-deploy validate` to fit it again"


class MissingKeyError(BadInputError):
    """An arch needs a key the table does not have."""


@dataclass
class Calibration:
    """``measured ≈ slope · predicted + intercept`` (ms), fitted from end-to-end measurements."""

    slope: float
    intercept: float
    fitted_on: int = 0
    backend: str = ""
    date: str = ""
    intervals: LatencyIntervals | None = None  # conformal intervals and tail bounds (validate of timed networks)

    def apply(self, predicted: np.ndarray | float) -> np.ndarray | float:
        return self.slope * predicted + self.intercept

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slope": self.slope,
            "intercept": self.intercept,
            "fitted_on": self.fitted_on,
            "backend": self.backend,
            "date": self.date,
        }
        if self.intervals is not None:
            out["intervals"] = self.intervals.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> Calibration:
        """A stored calibration; a slope that is not finite and > 0 or an intercept that is not
        finite is one :class:`BadInputError` naming the file, the field and the value."""
        where = f"{source}: calibration"
        if not isinstance(data, dict):
            raise BadInputError(f"{where} must be an object with 'slope' and 'intercept' (or null); {_REVALIDATE}")
        for name in ("slope", "intercept"):
            value = data.get(name)
            if not finite_number(value):
                raise BadInputError(f"{where}: '{name}' is {shown(value)} (must be a finite number); {_REVALIDATE}")
        if not data["slope"] > 0:
            raise BadInputError(
                f"{where}: 'slope' is {shown(data['slope'])} "
                f"(must be > 0: a larger sum must predict a slower network); {_REVALIDATE}"
            )
        fitted_on = data.get("fitted_on", 0)
        if not _is_count(fitted_on):
            raise BadInputError(f"{where}: 'fitted_on' is {shown(fitted_on)} (must be a non-negative integer)")
        return cls(
            float(data["slope"]),
            float(data["intercept"]),
            int(fitted_on),
            str(data.get("backend", "")),
            str(data.get("date", "")),
            LatencyIntervals.from_dict(data["intervals"], where) if data.get("intervals") is not None else None,
        )


@dataclass
class LatencyTable:
    """Resolution -> key -> latency record (ms). ``value_field`` names the record field predictions sum."""

    tables: dict[int, dict[str, dict[str, float]]]
    metadata: TableMetadata = field(default_factory=TableMetadata)
    calibration: Calibration | None = None
    source: str = ""

    # ------------------------------------------------------------------ identity
    @property
    def width_mult(self) -> float:
        if self.metadata.width_mult is not None:
            return check_width_mult(self.metadata.width_mult, self.source or "latency table")
        for table in self.tables.values():
            found = _first_conv_width(table)
            if found is not None:
                return found[0]
        raise BadInputError(
            f"{self.source or 'latency table'}: cannot infer the width multiplier (no 'Conv-' key with 16 or 24 "
            "output channels); pass --width-mult"
        )

    @property
    def value_field(self) -> str:
        return self.metadata.value_field

    @property
    def call_overhead_ms(self) -> float:
        """Per-inference overhead measured once and subtracted from every entry (added back once)."""
        return self.metadata.call_overhead_ms or 0.0

    @property
    def resolutions(self) -> list[int]:
        return sorted(self.tables)

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    @property
    def name(self) -> str:
        return str(self.metadata.device or Path(self.source).stem or "lut")

    def value(self, r: int, key: str) -> float:
        return float(self.tables[r][key][self.value_field])

    def has(self, r: int, key: str) -> bool:
        return key in self.tables.get(r, {})

    @property
    def precision(self) -> str:
        """The precision the table was measured at (its ``precision`` setting; fp32 where none is recorded:
        every table before precisions were recorded, and the official ones, is float32)."""
        return str(self.metadata.settings.get("precision") or "fp32")

    def identity(self) -> dict[str, Any]:
        """What a manifest records about the table a prediction came from."""
        keys = ("device", "backend", "runtime", "runtime_version", "threads", "date", "toolkit_version")
        out = {k: getattr(self.metadata, k) for k in keys if getattr(self.metadata, k) is not None}
        said = self.metadata.target or {}  # what the target said about itself: the phone model, the GPU, ...
        out.update({k: said[k] for k in IDENTITY_KEYS if said.get(k) not in (None, "")})
        if self.metadata.settings.get("precision"):
            out["precision"] = self.metadata.settings["precision"]
        out["measurement"] = self.metadata.measurement
        out["source"] = self.source
        out["width_mult"] = self.width_mult
        out["calibration"] = None if self.calibration is None else self.calibration.to_dict()
        return out

    # ------------------------------------------------------------------ prediction
    def predict_breakdown(self, arch: Arch, width_mult: float | None = None) -> dict[str, float]:
        """Per-operator latency (ms) of ``arch``; raises :class:`MissingKeyError` naming a missing key."""
        w = self.width_mult if width_mult is None else width_mult
        out: dict[str, float] = {}
        for op in arch_ops(arch, w):
            if not self.has(arch.r, op.key):
                raise self._missing(op.key, arch.r)
            out[op.key] = out.get(op.key, 0.0) + self.value(arch.r, op.key)
        return out

    def predict(self, arch: Arch, width_mult: float | None = None, calibrated: bool = True) -> float:
        total = sum(self.predict_breakdown(arch, width_mult).values()) + self.call_overhead_ms
        if calibrated and self.calibration is not None:
            return float(self.calibration.apply(total))
        return total

    def predict_batch(self, batch: ArchBatch, calibrated: bool = True) -> np.ndarray:
        """Latency (ms) of every arch in the batch, by array gathers."""
        return self.compiled().predict(batch, calibrated=calibrated)

    # ------------------------------------------------------------------ completeness and calibration
    def declared_resolutions(self) -> list[int]:
        """Resolutions the table has entries for, plus those its metadata says were to be profiled."""
        return sorted(set(self.tables) | set(self.metadata.resolutions))

    def missing_keys(self, r: int) -> list[str]:
        """The keys of resolution ``r`` (every operator a sub-network there can contain) not in the table."""
        present = self.tables.get(r, {})
        return [op.key for op in resolution_ops(r, self.width_mult) if op.key not in present]

    def check_complete(self, resolutions: Iterable[int] | None = None) -> None:
        """Every key of these resolutions (default: :meth:`declared_resolutions`) is present, else a
        :class:`MissingKeyError` naming the first missing key, its resolution and the command that
        completes the table (an interrupted ``profile`` leaves such a table: ``--resume`` finishes it)."""
        wanted = self.declared_resolutions() if resolutions is None else sorted(set(resolutions))
        incomplete = {r: keys for r in wanted if (keys := self.missing_keys(r))}
        if incomplete:
            r, keys = next(iter(incomplete.items()))
            raise self._missing(keys[0], r, sorted(incomplete), sum(len(k) for k in incomplete.values()))

    def fastest_sum(self) -> float | None:
        """The smallest uncalibrated prediction (ms) of any sub-network whose keys are all in the table
        (exact; the same as ``compiled().slot_table.minimum()`` on a complete table), None if none is."""
        st = self.compiled().slot_table
        best = math.inf
        for ri in range(len(st.resolutions)):
            if np.isnan(st.fixed[ri]):
                continue
            flat = st.slots[ri].reshape(N_BLOCKS, -1)
            cheapest = np.where(np.isnan(flat), np.inf, flat).min(axis=1)
            total = float(st.fixed[ri])
            for stage in range(N_STAGES):
                costs = cheapest[stage * MAX_DEPTH : (stage + 1) * MAX_DEPTH]
                total += min(float(costs[:d].sum()) for d in DEPTHS)
            best = min(best, total)
        return None if math.isinf(best) else best

    def check_calibration(self) -> None:
        """The calibrated prediction of the table's fastest network must stay > 0 ms (as
        ``validation.fit_calibration`` guarantees for the fits it makes)."""
        c = self.calibration
        if c is None or c.intercept > 0:  # slope > 0 (checked on load) and sums >= 0: nothing can go <= 0
            return
        fastest = self.fastest_sum()
        if fastest is None:
            return
        value = float(c.apply(fastest))
        if not value > 0:
            raise BadInputError(
                f"{self.source or 'latency table'}: calibration slope={c.slope!r} intercept={c.intercept!r} predicts "
                f"{value:.4f} ms for the table's fastest sub-network (LUT sum {fastest:.4f} ms); a latency must stay "
                f"> 0: {_REVALIDATE}"
            )

    def compiled(self) -> CompiledTable:
        """Prediction arrays, rebuilt when entries were added since the last call."""
        cache = getattr(self, "_compiled", None)
        if cache is None or cache.version != (len(self), self.width_mult):
            cache = CompiledTable(self)
            self._compiled = cache
        return cache

    def _missing(
        self, key: str, r: int, resolutions: list[int] | None = None, n_missing: int | None = None
    ) -> MissingKeyError:
        where = self.source or "latency table"
        res = ",".join(str(x) for x in (resolutions or [r]))
        if self.metadata.backend:
            hint = f"ofa-deploy profile --backend {self.metadata.backend}{self._resume_flags()} --resolutions {res} "
            hint += f"--width-mult {self.width_mult} --out {self.source or 'LUT'} --resume"
        else:
            hint = f"ofa-deploy profile --backend NAME --resolutions {res} --width-mult {self.width_mult} --out LUT"
        if n_missing is None:
            return MissingKeyError(f"{where}: no entry for '{key}' (resolution {r}); measure it with: {hint}")
        return MissingKeyError(
            f"{where}: no entry for '{key}' (resolution {r}): the table is incomplete ({n_missing} key(s) missing "
            f"at resolution(s) {res}, as an interrupted profile leaves it); complete it with: {hint}"
        )

    def _resume_flags(self) -> str:
        """The settings ``profile --resume`` must see again to accept the table (device, threads)."""
        from ofa_deploy.backend.profiles import profile_names

        flags = ""
        device = self.metadata.device
        if device and device != self.metadata.backend and device in profile_names():
            flags += f" --device {device}"
        if self.metadata.threads is not None:
            flags += f" --threads {self.metadata.threads}"
        return flags

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """A toolkit LUT file, one official per-resolution YAML file, or a directory of them."""
        path = Path(path)
        if path.is_dir():
            return cls._load_official_dir(path)
        text = read_input_text(path, "latency table", LUT_FILE_LIMIT)  # a regular file within the limit
        if text.lstrip().startswith("{"):
            return cls._from_toolkit_text(text, path)
        return cls._from_official_text(text, path)

    @classmethod
    def _from_toolkit_text(cls, text: str, path: Path) -> LatencyTable:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}: latency table is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; nesting deeper than the stack
            raise BadInputError(f"{path}: latency table is not usable JSON ({_first_line(exc)})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadInputError(f'{path}: not an ofa-deploy latency table (expected "format": "{FORMAT}")')
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise BadInputError(f"{path}: latency table has no 'entries' object")
        tables = {}
        for r_text, table in entries.items():
            if not str(r_text).isdigit() or len(str(r_text)) > 4 or not isinstance(table, dict):
                raise BadInputError(f"{path}: 'entries' must map resolutions to tables, found {shown(r_text)}")
            tables[_check_resolution(int(r_text), path)] = table
        metadata = TableMetadata.from_dict(data.get("metadata", {}), str(path))
        for r, table in sorted(tables.items()):
            _check_entries(table, f"{path}: entries[{r}]", metadata.value_field)
        widths = {r: w for r, table in tables.items() if (w := _first_conv_width(table)) is not None}
        _check_one_width([(f"entries[{r}]", w) for r, w in sorted(widths.items())], str(path))
        if metadata.width_mult is not None:
            for r, (w, channels) in sorted(widths.items()):
                if w != metadata.width_mult:
                    raise BadInputError(
                        f"{path}: metadata says width_mult {metadata.width_mult} but entries[{r}] has a first conv "
                        f"with {channels} output channels (width {w})"
                    )
        cal = data.get("calibration")
        return cls(
            tables=tables,
            metadata=metadata,
            calibration=None if cal is None else Calibration.from_dict(cal, str(path)),
            source=str(path),
        )

    @classmethod
    def _from_official_text(cls, text: str, path: Path) -> LatencyTable:
        try:
            entries = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise BadInputError(f"{path}: latency table is neither toolkit JSON nor valid YAML ({first})") from None
        except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; nesting deeper than the stack
            raise BadInputError(f"{path}: latency table is not usable YAML ({_first_line(exc)})") from None
        if not isinstance(entries, dict) or not entries:
            raise BadInputError(f"{path}: an official latency table must map keys to {{count, mean, std}}")
        _check_entries(entries, str(path), "mean")
        conv = [k for k in entries if str(k).startswith(FIRST_CONV + "-input:")]
        if len(conv) != 1:
            raise BadInputError(f"{path}: an official table holds exactly one 'Conv-input:...' key, found {len(conv)}")
        try:
            r = int(conv[0].split("input:")[1].split("x")[0])
        except ValueError:
            raise BadInputError(f"{path}: cannot read the resolution from key {shown(conv[0], 80)}") from None
        _check_resolution(r, path)
        named = OFFICIAL_FILE.match(path.name)
        if named and int(named.group(1)) != r:
            raise BadInputError(f"{path}: file name says resolution {named.group(1)} but its first conv is {r}x{r}")
        return cls(tables={r: entries}, metadata=TableMetadata(format=OFFICIAL), source=str(path))

    @classmethod
    def _load_official_dir(cls, path: Path) -> LatencyTable:
        files = sorted(p for p in path.iterdir() if OFFICIAL_FILE.match(p.name))
        if not files:
            raise BadInputError(f"{path}: no '<resolution>_lookup_table.yaml' files in this directory")
        tables: dict[int, dict[str, dict[str, float]]] = {}
        widths: list[tuple[str, tuple[float, int]]] = []
        for f in files:  # every file is read and checked, not only the resolutions a verb will use
            text = read_input_text(f, "latency table", LUT_FILE_LIMIT)
            one = cls._from_official_text(text, f).tables
            for table in one.values():
                w = _first_conv_width(table)
                if w is not None:
                    widths.append((f.name, w))
            tables.update(one)
        _check_one_width(widths, str(path))
        return cls(tables=tables, metadata=TableMetadata(format=OFFICIAL), source=str(path))

    def to_document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "metadata": self.metadata.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "entries": {str(r): table for r, table in sorted(self.tables.items())},
        }

    def save(self, path: str | Path) -> None:
        """Write the toolkit file atomically: a reader (or a kill -9) never sees half a file."""
        atomic_write_json(Path(path), self.to_document(), indent=1)  # strict JSON: no NaN

    def save_official(self, directory: str | Path) -> list[Path]:
        """One official ``<r>_lookup_table.yaml`` per resolution (``{count, mean, std}`` per key)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for r, table in sorted(self.tables.items()):
            subset = {
                key: {"count": int(e["count"]), "mean": float(e[self.value_field]), "std": float(e["std"])}
                for key, e in table.items()
            }
            target = directory / f"{r}_lookup_table.yaml"
            atomic_write_text(target, yaml.safe_dump(subset, sort_keys=True))
            written.append(target)
        return written


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _non_negative(value: Any) -> bool:
    return finite_number(value) and value >= 0


def _is_count(value: Any) -> bool:
    return _non_negative(value) and float(value).is_integer()


def _check_entries(entries: dict, where: str, value_field: str) -> None:
    """Every record, once, on load: latencies finite and >= 0 (the toolkit's overhead-subtracted
    entries may be 0), ``std`` finite and >= 0 and ``count`` a non-negative integer when present.
    Each failure is one line naming the file, the key, the field and the value."""
    for key, record in entries.items():
        if not isinstance(record, dict) or value_field not in record:
            raise BadInputError(f"{where}: entry {key!r} has no '{value_field}' value")
        for name in dict.fromkeys((value_field, *_LATENCY_FIELDS)):
            if name in record and not _non_negative(record[name]):
                raise BadInputError(
                    f"{where}: entry {key!r} has an invalid latency {name}={shown(record[name])} "
                    "(must be a finite number >= 0 ms)"
                )
        if "std" in record and not _non_negative(record["std"]):
            raise BadInputError(
                f"{where}: entry {key!r} has an invalid std={shown(record['std'])} (must be a finite number >= 0)"
            )
        if "count" in record and not _is_count(record["count"]):
            raise BadInputError(
                f"{where}: entry {key!r} has an invalid count={shown(record['count'])} (must be a non-negative integer)"
            )
        for name in _OPTIONAL_FIELDS:
            if record.get(name) is not None and not _non_negative(record[name]):
                raise BadInputError(
                    f"{where}: entry {key!r} has an invalid {name}={shown(record[name])} "
                    "(must be null or a finite number >= 0)"
                )


def _check_resolution(r: int, path: Path) -> int:
    if r not in RESOLUTIONS:
        raise BadInputError(
            f"{path}: resolution {r} is not a resolution of the space ({RESOLUTIONS[0]}..{RESOLUTIONS[-1]} step 4)"
        )
    return r


def _first_conv_width(table: dict) -> tuple[float, int] | None:
    """(width multiplier, output channels) a table's first-conv key says, None when it has no such key."""
    for key in table:
        if str(key).startswith(FIRST_CONV + "-input:"):
            try:
                channels = int(str(key).rsplit("x", 1)[1])
            except (IndexError, ValueError):
                continue
            w = width_mult_for_first_conv(channels)
            if w is not None:
                return w, channels
    return None


def _check_one_width(widths: list[tuple[str, tuple[float, int]]], where: str) -> None:
    """One width multiplier per table: two files (resolutions) of different widths are refused."""
    for name, (w, channels) in widths[1:]:
        first, (w0, c0) = widths[0]
        if w != w0:
            raise BadInputError(
                f"{where}: {first} is for width multiplier {w0} (first conv: {c0} output channels) but {name} is for "
                f"{w} ({channels} channels); keep the tables of one width together"
            )


class CompiledTable:
    """The table as a :class:`SlotTable` for vectorised prediction (NaN marks a missing key)."""

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self.version = (len(table), table.width_mult)
        w = table.width_mult
        resolutions = np.array(table.resolutions, dtype=np.int64)
        n_r = len(resolutions)
        fixed = np.full(n_r, np.nan)
        self.fixed_missing: list[str | None] = [None] * n_r
        slots = np.full((n_r, N_BLOCKS, len(KERNEL_SIZES), len(EXPAND_RATIOS)), np.nan)
        self.block_keys: dict[tuple[int, int, int, int], str] = {}
        for ri, r in enumerate(resolutions.tolist()):
            fixed_ops = stem_ops(r, w) + head_ops(final_feature_size(r), w)
            missing = [op.key for op in fixed_ops if not table.has(r, op.key)]
            if missing:
                self.fixed_missing[ri] = missing[0]
            else:
                fixed[ri] = sum(table.value(r, op.key) for op in fixed_ops) + table.call_overhead_ms
            for stage, positions in enumerate(stage_block_ops(r, w)):
                for slot in range(MAX_DEPTH):
                    b = stage * MAX_DEPTH + slot
                    for i, op in enumerate(positions[0 if slot == 0 else 1]):
                        ki, ei = divmod(i, len(EXPAND_RATIOS))
                        self.block_keys[(ri, b, ki, ei)] = op.key
                        if table.has(r, op.key):
                            slots[ri, b, ki, ei] = table.value(r, op.key)
        self.slot_table = SlotTable(table.source or "latency table", resolutions, fixed, slots)

    def predict(self, batch: ArchBatch, calibrated: bool = True) -> np.ndarray:
        total = self.slot_table.evaluate(batch)
        if np.isnan(total).any():
            self._raise_missing(batch)
        if calibrated and self.table.calibration is not None:
            total = self.table.calibration.apply(total)
        return total

    def _raise_missing(self, batch: ArchBatch) -> None:
        r_index, per_slot = self.slot_table.per_slot(batch)
        bad = np.isnan(self.slot_table.fixed[r_index]) | np.isnan(per_slot).any(axis=1)
        n = int(np.argmax(bad))
        ri = int(r_index[n])
        key = self.fixed_missing[ri]
        if key is None:
            b = int(np.argmax(np.isnan(per_slot[n])))
            k_index = KERNEL_SIZES.index(int(batch.ks[n, b]))
            e_index = EXPAND_RATIOS.index(int(batch.e[n, b]))
            key = self.block_keys[(ri, b, k_index, e_index)]
        raise self.table._missing(key, int(batch.r[n]))


def load_lut(path: str | Path, width_mult: float | None = None) -> LatencyTable:
    """``--lut`` for every verb: toolkit file, official YAML file or directory; ``--width-mult`` overrides."""
    table = LatencyTable.load(path)
    if width_mult is not None:
        table.metadata.width_mult = check_width_mult(width_mult)
    elif table.metadata.width_mult is None:
        table.metadata.width_mult = table.width_mult
    table.check_calibration()
    return table
