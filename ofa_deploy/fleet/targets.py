"""One device of a fleet as something that can be shipped to another process or host: the backend's
name, timing and fully resolved settings (what ``make_backend`` produced on the command line), plus
the id the device is known by. ``create()`` builds a fresh backend from it wherever it runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from typing import Any

from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.timing import TimingOptions


@dataclass(frozen=True)
class BackendSpec:
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


def specs_from_args(args: argparse.Namespace, profile, base=None, recorded=None, check=None) -> dict[str, BackendSpec]:
    """device id -> BackendSpec for every target the command line names (the backend's repeatable
    flag, e.g. ``--serial`` given several times; ``--all-devices``; else the cluster's devices), built
    like any verb's backend (``make_backend``) and passed to ``check`` (e.g. "can it deploy")."""
    from ofa_deploy.backend.registry import backend_class
    from ofa_deploy.cli.common import make_backend, repeated_flag, with_flag
    from ofa_deploy.errors import BadInputError, TargetUnavailableError

    name = profile.backend if profile is not None else args.backend
    cls = backend_class(name)
    option = next((o for o in cls.cli_options if o.repeatable), None)
    devices = list(repeated_flag(args, option.flag)) if option else []
    if getattr(args, "all_devices", False):
        attached = [t["serial"] for t in cls.attached_targets() if t.get("state", "device") == "device"]
        if not attached:
            raise TargetUnavailableError(f"--all-devices: backend '{name}' sees no attached device")
        devices += [d for d in attached if d not in devices]
    if not devices and getattr(args, "cluster", None):
        from ofa_deploy.fleet.cluster import Cluster

        model = profile.name if profile is not None and getattr(args, "device", None) else None
        devices = Cluster.connect(args.cluster).devices(name, model)
        if not devices:
            raise TargetUnavailableError(f"the cluster at {args.cluster} advertises no '{name}' device")
    if len(set(devices)) != len(devices):
        raise BadInputError(f"{option.flag if option else 'device'}: a device is named twice")
    specs = {}
    for device in devices or [None]:
        one = with_flag(args, option.flag, device) if option and device is not None else args
        with make_backend(one, profile, base, recorded) as backend:
            if check is not None:
                check(backend)
            label = device or getattr(backend.settings, "serial", None) or getattr(backend, "serial", None) or name
            specs[label] = BackendSpec.of(label, backend)
    return specs
