"""Latency lookup tables: the official per-resolution YAML files and the toolkit's single file.

The official files (``160_lookup_table.yaml`` ...) map a key to ``{count, mean, std}`` in
milliseconds, one file per resolution; they are read and written unchanged, and predictions from
them use ``mean`` exactly as the official code does. Tables are kept per resolution because the
same key (e.g. ``Logits-...``) is measured separately in each official file, with different
values. The toolkit's own file is JSON holding all resolutions plus metadata (device, backend,
runtime and version, threads, width multiplier, resolutions, date, toolkit version, the timing
reference) and optionally a calibration fitted by ``validate``.

Prediction is a gather: for each resolution the table is laid out as an array
``[slot 0..19, kernel, expand]`` plus a fixed part (stem and head), so a whole population is
predicted with numpy indexing and no per-arch Python loop.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ofa_deploy.errors import BadInputError
from ofa_deploy.files import atomic_write_text
from ofa_deploy.latency.metadata import OFFICIAL, TableMetadata
from ofa_deploy.space.arch import (
    EXPAND_RATIOS,
    KERNEL_SIZES,
    MAX_DEPTH,
    N_BLOCKS,
    Arch,
    ArchBatch,
    check_width_mult,
)
from ofa_deploy.space.geometry import final_feature_size, width_mult_for_first_conv
from ofa_deploy.space.ops import FIRST_CONV, arch_ops, head_ops, stage_block_ops, stem_ops
from ofa_deploy.space.slot_table import SlotTable

FORMAT = "ofa-deploy-lut/1"
OFFICIAL_FILE = re.compile(r"^(\d+)_lookup_table\.yaml$")
_K_INDEX = {k: i for i, k in enumerate(KERNEL_SIZES)}
_E_INDEX = {e: i for i, e in enumerate(EXPAND_RATIOS)}


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

    def apply(self, predicted: np.ndarray | float) -> np.ndarray | float:
        return self.slope * predicted + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "fitted_on": self.fitted_on,
            "backend": self.backend,
            "date": self.date,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            float(data["slope"]),
            float(data["intercept"]),
            int(data.get("fitted_on", 0)),
            str(data.get("backend", "")),
            str(data.get("date", "")),
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
        for key in (k for table in self.tables.values() for k in table):
            if key.startswith(FIRST_CONV + "-"):
                channels = int(key.rsplit("x", 1)[1])
                w = width_mult_for_first_conv(channels)
                if w is not None:
                    return w
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

    def identity(self) -> dict[str, Any]:
        """What a manifest records about the table a prediction came from."""
        keys = ("device", "backend", "runtime", "runtime_version", "threads", "date", "toolkit_version")
        out = {k: getattr(self.metadata, k) for k in keys if getattr(self.metadata, k) is not None}
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

    def compiled(self) -> CompiledTable:
        """Prediction arrays, rebuilt when entries were added since the last call."""
        cache = getattr(self, "_compiled", None)
        if cache is None or cache.version != (len(self), self.width_mult):
            cache = CompiledTable(self)
            self._compiled = cache
        return cache

    def _missing(self, key: str, r: int) -> MissingKeyError:
        where = self.source or "latency table"
        hint = (
            f"ofa-deploy profile --backend {self.metadata.backend} --resolutions {r} "
            f"--width-mult {self.width_mult} --out {self.source or 'LUT'} --resume"
            if self.metadata.backend
            else f"ofa-deploy profile --backend NAME --resolutions {r} --width-mult {self.width_mult} --out LUT"
        )
        return MissingKeyError(f"{where}: no entry for '{key}' (resolution {r}); measure it with: {hint}")

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """A toolkit LUT file, one official per-resolution YAML file, or a directory of them."""
        path = Path(path)
        if path.is_dir():
            return cls._load_official_dir(path)
        if not path.exists():
            raise BadInputError(f"{path}: no such latency table")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{path}: cannot read latency table ({exc})") from None
        if text.lstrip().startswith("{"):
            return cls._from_toolkit_text(text, path)
        return cls._from_official_text(text, path)

    @classmethod
    def _from_toolkit_text(cls, text: str, path: Path) -> LatencyTable:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}: latency table is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadInputError(f'{path}: not an ofa-deploy latency table (expected "format": "{FORMAT}")')
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise BadInputError(f"{path}: latency table has no 'entries' object")
        tables = {}
        for r_text, table in entries.items():
            if not str(r_text).isdigit() or not isinstance(table, dict):
                raise BadInputError(f"{path}: 'entries' must map resolutions to tables, found {r_text!r}")
            tables[int(r_text)] = table
        metadata = TableMetadata.from_dict(data.get("metadata", {}), str(path))
        for table in tables.values():
            _check_entries(table, path, metadata.value_field)
        cal = data.get("calibration")
        return cls(
            tables=tables,
            metadata=metadata,
            calibration=Calibration.from_dict(cal) if cal else None,
            source=str(path),
        )

    @classmethod
    def _from_official_text(cls, text: str, path: Path) -> LatencyTable:
        try:
            entries = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise BadInputError(f"{path}: latency table is neither toolkit JSON nor valid YAML ({first})") from None
        if not isinstance(entries, dict) or not entries:
            raise BadInputError(f"{path}: an official latency table must map keys to {{count, mean, std}}")
        _check_entries(entries, path, "mean")
        conv = [k for k in entries if str(k).startswith(FIRST_CONV + "-input:")]
        if len(conv) != 1:
            raise BadInputError(f"{path}: an official table holds exactly one 'Conv-input:...' key, found {len(conv)}")
        r = int(conv[0].split("input:")[1].split("x")[0])
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
        for f in files:
            try:
                text = f.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInputError(f"{f}: cannot read latency table ({exc})") from None
            tables.update(cls._from_official_text(text, f).tables)
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
        atomic_write_text(Path(path), json.dumps(self.to_document(), indent=1, sort_keys=False) + "\n")

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


def _check_entries(entries: dict, path: Path, value_field: str) -> None:
    for key, record in entries.items():
        if not isinstance(record, dict) or value_field not in record:
            raise BadInputError(f"{path}: entry '{key}' has no '{value_field}' value")
        value = record[value_field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise BadInputError(f"{path}: entry '{key}' has an invalid latency {value!r}")


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
    return table
