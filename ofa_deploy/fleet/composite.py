"""Several identical devices behind one backend, for verbs that measure whole networks in batches
(``validate --serial S1 --serial S2 ...``): every batch is split over the devices and timed on all
of them at once, each normalised by its own run of the table's reference operator against the
table's one baseline, so their figures are comparable and the verb itself does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ofa_deploy.backend.interface import Backend, RemoteDeviceBackend
from ofa_deploy.backend.timing import LatencyStats, Reference
from ofa_deploy.errors import BadInputError
from ofa_deploy.graph.ir import Graph


class FleetBackend(RemoteDeviceBackend):
    """The members' backend name, timing and settings (of the first member); measures on all."""

    def __init__(self, members: dict[str, Backend]) -> None:
        if not members:
            raise BadInputError("no device to measure on")
        self.members = members
        first = next(iter(members.values()))
        if not all(isinstance(m, RemoteDeviceBackend) for m in members.values()):
            raise BadInputError(f"backend '{first.name}' measures on this machine: several devices need a remote one")
        self.name, self.description = first.name, first.description  # what reports and calibrations record
        self.extra, self.artifact_kinds = first.extra, first.artifact_kinds
        self.timing, self.settings = first.timing, first.settings
        self.batch_size = sum(max(1, m.batch_size) for m in members.values())
        self._references: dict[str, list[Reference | None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="fleet-device")

    def _all(self, call) -> list[Any]:
        return list(self._pool.map(call, self.members.values()))

    def runtime_info(self) -> dict[str, str]:
        return next(iter(self.members.values())).runtime_info()

    def check(self) -> dict[str, Any]:
        infos = self._all(lambda m: m.check())
        return {**infos[0], "devices": list(self.members), "targets": infos}

    def open(self) -> None:
        self._all(lambda m: m.open())

    def close(self) -> None:
        for member in self.members.values():
            member.close()
        self._pool.shutdown(wait=False)

    def encode(self, graph: Graph) -> bytes:
        return next(iter(self.members.values())).encode(graph)

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        refs = self._all(lambda m: m.reference(key, baseline_ms))
        self._references[key] = refs
        baselines = sorted(r.baseline_ms for r in refs if r is not None)
        return Reference(key, None, baseline_ms if baseline_ms is not None else baselines[len(baselines) // 2])

    def measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        """Deal the models out to the devices in contiguous slices, time them all at once, keep the order."""
        members = list(self.members.values())
        refs = self._references.get(reference.key) if reference is not None else None
        share = -(-len(models) // len(members))
        jobs = []
        for i, member in enumerate(members):
            part = slice(i * share, (i + 1) * share)
            if models[part]:
                ref = refs[i] if refs else None
                jobs.append(self._pool.submit(member.measure_models, models[part], ref, names[part] if names else None))
        return [stats for job in jobs for stats in job.result()]
