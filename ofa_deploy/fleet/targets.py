"""One device of a fleet as something that can be shipped to another process or host: the backend's
name, timing and fully resolved settings (what ``make_backend`` produced on the command line), plus
the id the device is known by. ``create()`` builds a fresh backend from it wherever it runs. The
command line's devices become specs in :mod:`ofa_deploy.cli.fleet_args`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.timing import TimingOptions


@dataclass(frozen=True)
class BackendSpec:
    """One device of a fleet as plain data: backend name, timing and resolved settings; :meth:`create` builds it."""

    device: str  # the id: a serial, HOST:PORT, ...
    backend: str
    timing: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, device: str, backend: Backend) -> BackendSpec:
        return cls(device, backend.name, backend.timing.to_dict(), backend.settings.to_dict())

    def create(self) -> Backend:
        from ofa_deploy.backend.registry import create_backend

        return create_backend(
            self.backend,
            TimingOptions(**self.timing),
            settings_source=f"backend '{self.backend}' for device {self.device}",
            **self.settings,
        )

    def with_settings(self, **settings: Any) -> BackendSpec:
        return replace(self, settings={**self.settings, **settings})
