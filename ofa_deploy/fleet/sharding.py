"""One latency table measured in shards over several identical devices, merged back into one.

* :func:`split_plan`: the keys are dealt round-robin over the devices (neighbouring keys have
  similar sizes, so every shard gets a similar mix), and a few **anchor** keys, spread over the
  plan, are measured by *every* device: they are what the devices are compared on.
* Each device profiles its shard into its own file (``<out>.shards/<device>.json``) through the
  ordinary resumable :func:`ofa_deploy.latency.profiling.profile`, so an interrupted run resumes
  per device.
* :func:`merge_shards`: one table holding every key. Each entry says which device measured it
  (``"device"``); anchor entries hold every device's value (``"devices"``), their median and the
  spread (``"device_spread"`` = max/min). A device whose anchors sit off the others' by more than
  the noise (see :func:`disagreeing_devices`) is *reported* in ``metadata.fleet.disagreeing``, and
  its anchor values are left out of the median; the rest of its entries stay in the table, marked
  with the device, so a user can re-profile them on another device.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.errors import BadInputError
from ofa_deploy.fleet.records import device_file_name, require_distinct_devices
from ofa_deploy.latency.profiling import ProfilePlan
from ofa_deploy.latency.table import LatencyTable

ANCHORS = 4  # keys every device measures
NOISE_FLOOR = 0.10  # relative difference always treated as noise between identical devices
NOISE_SIGMAS = 3.0  # ... or this many times the measured round-to-round spread, if larger


@dataclass
class Shard:
    """One device's share of a sharded profile: its plan (its keys plus the anchors) and its own table file."""

    device: str
    plan: ProfilePlan
    path: Path


def sub_plan(plan: ProfilePlan, keys: Sequence[str]) -> ProfilePlan:
    """The part of ``plan`` with these keys (in the plan's order)."""
    wanted = set(keys)
    ops = {k: op for k, op in plan.ops.items() if k in wanted}
    by_res = {r: keys_r & wanted for r, keys_r in plan.keys_by_resolution.items() if keys_r & wanted}
    return ProfilePlan(plan.width_mult, tuple(r for r in plan.resolutions if r in by_res), ops, by_res)


def anchor_keys(plan: ProfilePlan, count: int = ANCHORS) -> list[str]:
    """``count`` keys spread evenly over the plan (all of them if it has no more): what every device measures."""
    keys = list(plan.ops)
    if len(keys) <= count:
        return keys
    step = len(keys) / count
    return [keys[int(step * i + step / 2)] for i in range(count)]


def shard_dir(out: Path) -> Path:
    """The folder of a sharded profile's per-device tables: ``<out>.shards``."""
    return Path(f"{out}.shards")


def split_plan(plan: ProfilePlan, devices: Sequence[str], out: Path, anchors: int = ANCHORS) -> list[Shard]:
    """One shard per device: round-robin keys plus the anchors (for more than one device)."""
    if not devices:
        raise BadInputError("no device to profile on")
    require_distinct_devices(devices)
    common = anchor_keys(plan, anchors) if len(devices) > 1 else []
    rest = [k for k in plan.ops if k not in common]
    shards = []
    for i, device in enumerate(devices):
        mine = set(rest[i :: len(devices)]) | set(common)
        path = shard_dir(out) / f"{device_file_name(device)}.json"
        shards.append(Shard(device, sub_plan(plan, [k for k in plan.ops if k in mine]), path))
    return shards


def _value(record: dict[str, Any], field: str) -> float:
    return float(record[field])


def disagreeing_devices(
    anchors: dict[str, dict[str, dict[str, Any]]], field: str, floor: float = NOISE_FLOOR
) -> dict[str, dict[str, float]]:
    """Devices whose anchor entries differ from the other devices' median by more than the noise.

    ``anchors``: key -> device -> record. For each device the median over the anchors of
    (its value / the median of all devices' values) is its offset (with two devices both sit off
    the middle, and both are reported: two cannot outvote each other); the noise allowed is the
    larger of ``floor`` and NOISE_SIGMAS x the anchors' median round-to-round spread. Returns
    device -> {"ratio", "noise"} for those outside it."""
    devices = sorted({d for per in anchors.values() for d in per})
    if len(devices) < 2:
        return {}
    out = {}
    for device in devices:
        ratios, spreads = [], []
        for per in anchors.values():
            typical = statistics.median(_value(r, field) for r in per.values())
            if device not in per or len(per) < 2 or typical <= 0:
                continue
            ratios.append(_value(per[device], field) / typical)
            spread = per[device].get("round_spread")
            if isinstance(spread, (int, float)):
                spreads.append(float(spread))
        if not ratios:
            continue
        ratio = statistics.median(ratios)
        noise = max(floor, NOISE_SIGMAS * statistics.median(spreads)) if spreads else floor
        if abs(ratio - 1.0) > noise:
            out[device] = {"ratio": round(ratio, 4), "noise": round(noise, 4)}
    return out


def merge_shards(plan: ProfilePlan, shards: dict[str, LatencyTable], out: Path) -> LatencyTable:
    """One table with every key of ``plan`` from the devices' shard tables (device -> table)."""
    if not shards:
        raise BadInputError("no shard to merge")
    first_device = next(iter(shards))
    first = shards[first_device]
    field = first.metadata.value_field
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for device, table in shards.items():
        for entries in table.tables.values():
            for key, record in entries.items():
                by_key.setdefault(key, {})[device] = record
    missing = [k for k in plan.ops if k not in by_key]
    if missing:
        raise BadInputError(f"{out}: the shards lack {len(missing)} key(s), e.g. {missing[0]}; rerun with --resume")
    anchors = {k: per for k, per in by_key.items() if len(per) > 1}
    outliers = disagreeing_devices(anchors, field)
    merged: dict[str, dict[str, Any]] = {}
    for key in plan.ops:
        per = by_key[key]
        if len(per) == 1:
            device, record = next(iter(per.items()))
            merged[key] = {**record, "device": device}
            continue
        agreeing = {d: r for d, r in per.items() if d not in outliers} or per
        values = {d: _value(r, field) for d, r in per.items()}
        typical = statistics.median(values[d] for d in agreeing)
        base = copy.deepcopy(min(agreeing.values(), key=lambda r: abs(_value(r, field) - typical)))
        low = min(values.values())
        merged[key] = {
            **base,
            field: typical,
            "device": "median of " + ", ".join(sorted(agreeing)),
            "devices": values,
            "device_spread": max(values.values()) / low if low > 0 else None,
        }
    tables = {r: {k: merged[k] for k in plan.ops if k in keys} for r, keys in plan.keys_by_resolution.items()}
    metadata = dataclasses.replace(first.metadata, resolutions=list(plan.resolutions), width_mult=plan.width_mult)
    spreads = [m["device_spread"] for m in merged.values() if m.get("device_spread")]
    metadata.fleet = {
        "devices": [
            {
                "device": device,
                "keys": sum(len(t) for t in table.tables.values()),
                "reference_baseline_ms": table.metadata.reference.baseline_ms if table.metadata.reference else None,
                "call_overhead_ms": table.metadata.call_overhead_ms,
                "runtime_version": table.metadata.runtime_version,
            }
            for device, table in shards.items()
        ],
        "anchors": sorted(anchors),
        "max_device_spread": max(spreads) if spreads else None,
        "disagreeing": outliers,
        "reference_from": first_device,
    }
    return LatencyTable(tables=tables, metadata=metadata, source=str(out))
