"""The command line's side of a fleet: which devices the flags name (a repeated ``--serial``,
``--all-devices``, ``--cluster``), each turned into a :class:`~ofa_deploy.fleet.targets.BackendSpec`
the way any verb builds its backend (``make_backend``). :mod:`ofa_deploy.fleet` itself takes
these specs and plain values, never an ``argparse`` namespace."""

from __future__ import annotations

import argparse

from ofa_deploy.backend.interface import Backend
from ofa_deploy.backend.registry import backend_class
from ofa_deploy.cli.common import make_backend, repeated_flag, with_flag
from ofa_deploy.errors import TargetUnavailableError
from ofa_deploy.fleet.targets import BackendSpec


def fleet_requested(args: argparse.Namespace) -> bool:
    """Several devices (a repeated device flag) or a cluster: the sharded path."""
    if getattr(args, "cluster", None):
        return True
    name = args.backend
    if name is None and args.device:
        from ofa_deploy.backend.profiles import load_profile

        name = load_profile(args.device).backend
    if name is None:
        return False
    option = next((o for o in backend_class(name).cli_options if o.repeatable), None)
    return option is not None and len(repeated_flag(args, option.flag)) > 1


def specs_from_args(args: argparse.Namespace, profile, base=None, recorded=None, check=None) -> dict[str, BackendSpec]:
    """device id -> BackendSpec for every target the command line names (the backend's repeatable
    flag, e.g. ``--serial`` given several times; ``--all-devices``; else the cluster's devices), built
    like any verb's backend (``make_backend``) and passed to ``check`` (e.g. "can it deploy")."""
    name = profile.backend if profile is not None else args.backend
    cls = backend_class(name)
    option = next((o for o in cls.cli_options if o.repeatable), None)
    devices = list(repeated_flag(args, option.flag)) if option else []
    if getattr(args, "all_devices", False):
        attached = [t.id for t in cls.attached_targets() if t.ready]
        if not attached:
            raise TargetUnavailableError(f"--all-devices: backend '{name}' sees no attached device")
        devices += [d for d in attached if d not in devices]
    if not devices and getattr(args, "cluster", None):
        from ofa_deploy.fleet.cluster import Cluster

        model = profile.name if profile is not None and getattr(args, "device", None) else None
        devices = Cluster.connect(args.cluster).devices(name, model)
        if not devices:
            raise TargetUnavailableError(f"the cluster at {args.cluster} advertises no '{name}' device")
    from ofa_deploy.fleet.records import require_distinct_devices

    require_distinct_devices(devices, option.flag if option else "device")
    specs = {}
    for device in devices or [None]:
        one = with_flag(args, option.flag, device) if option and device is not None else args
        with make_backend(one, profile, base, recorded) as backend:
            if check is not None:
                check(backend)
            label = device or backend.target_id or name
            specs[label] = BackendSpec.of(label, backend)
    return specs


def fleet_backend(args: argparse.Namespace, profile, base=None, recorded=None) -> Backend:
    """``make_backend`` for one target, or a :class:`~ofa_deploy.fleet.composite.FleetBackend` over
    every device the command line names (a repeated ``--serial``), or over the cluster's devices
    (``--cluster``)."""
    from ofa_deploy.fleet.composite import FleetBackend

    if not fleet_requested(args):
        return make_backend(args, profile, base, recorded)
    specs = specs_from_args(args, profile, base, recorded)
    if getattr(args, "cluster", None):  # each batch a Ray job on the device's host
        from ofa_deploy.fleet.cluster import Cluster, ClusterDevice

        cluster = Cluster.connect(args.cluster)
        return FleetBackend({device: ClusterDevice(cluster, spec) for device, spec in specs.items()})
    return FleetBackend({device: spec.create() for device, spec in specs.items()})
