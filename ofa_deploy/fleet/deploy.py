"""Deploying one bundle to many devices: push, check on the device, benchmark there, record.

For each device, in parallel (one thread per device; one failing device never stops the others):

1. connect and read the device's identity (an unreachable device is recorded as such: exit 3);
2. ask the device for the sha256 of the bundle's files in its install directory
   (``<install dir>/<bundle name>/``); when it already holds them and a completed deployment of the
   same artifact is recorded, skip it (unless ``--force``);
3. push the files that differ (all with ``--force``), then have the device hash every pushed file
   itself; any difference is a ``hash-mismatch`` (nothing is benchmarked on a corrupt install);
4. benchmark the installed artifact where it is, normalised by the bundle's reference operator
   like its prediction, and compare with the prediction against ``--tolerance``;
5. write ``BUNDLE/deployments/<device>.json`` (atomically).

A backend takes part by having the :class:`~ofa_deploy.backend.interface.Deployer` role:
``install_dir``, ``install``, ``remote_sha256``, ``benchmark_installed`` and ``device_identity``
(adb has it; docs/fleet.md says what a TVM RPC backend would need).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_deploy.backend.fingerprint import (
    TargetFingerprint,
    check_same_target,
    fingerprint_of_backend,
    fingerprint_of_identity,
)
from ofa_deploy.backend.interface import Backend, Deployer, RemoteDeviceBackend
from ofa_deploy.deploy.bundle import sha256
from ofa_deploy.deploy.manifest import MANIFEST, Manifest
from ofa_deploy.errors import BadInputError, OFADeployError, TargetUnavailableError
from ofa_deploy.fleet.records import (
    COMPLETED,
    DEPLOYED,
    FAILED,
    HASH_MISMATCH,
    OUT_OF_TOLERANCE,
    RECORDS_DIR,
    SKIPPED,
    TARGET_MISMATCH,
    UNREACHABLE,
    WOULD_INSTALL,
    WOULD_SKIP,
    DeploymentRecord,
    read_record,
    write_record,
)
from ofa_deploy.latency.metadata import ReferenceInfo, utc_now
from ofa_deploy.latency.profiling import load_reference

DEFAULT_TOLERANCE = 0.25  # |measured - predicted| / predicted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployOptions:
    """What ``deploy`` does on each device: install directory, tolerance (of the prediction), force, dry run."""

    remote_dir: str | None = None  # install directory on the device (default: the backend's)
    tolerance: float = DEFAULT_TOLERANCE
    force: bool = False
    dry_run: bool = False
    device_profile: str | None = None  # the profile the devices are reached with (compared with the prediction's)
    allow_target_mismatch: bool = False  # deploy to a device of another target than the prediction's anyway


@dataclass(frozen=True)
class BundleFiles:
    """What a deployment needs from a verified bundle (picklable, so a cluster worker can get it)."""

    name: str  # the bundle directory's name: the folder it gets on the device
    files: tuple[str, ...]  # pushed, in order: the artifact's files, arch.json, manifest.json
    checksums: dict[str, str]  # sha256 of every pushed file
    main: str
    predicted_ms: float | None
    reference: ReferenceInfo | None
    predicted_target: dict[str, Any] | None = None  # TargetFingerprint.to_dict() of the prediction's LUT

    @classmethod
    def of(cls, directory: Path, manifest: Manifest) -> BundleFiles:
        """From a bundle that :func:`ofa_deploy.deploy.bundle.open_bundle` has verified."""
        directory = Path(directory).resolve()
        checksums = {**manifest.checksums, MANIFEST: sha256(directory / MANIFEST)}
        predicted = manifest.predicted_latency
        lut = predicted.get("lut") if predicted else None
        return cls(
            name=directory.name,
            files=(*manifest.files, MANIFEST),
            checksums=checksums,
            main=manifest.artifact.main,
            predicted_ms=float(predicted["ms"]) if predicted and predicted.get("ms") is not None else None,
            reference=manifest.reference,
            predicted_target=fingerprint_of_identity(lut).to_dict() if isinstance(lut, dict) else None,
        )

    @property
    def artifact_files(self) -> tuple[str, ...]:
        """The files whose hashes decide whether a device already holds this bundle (not the
        manifest, which `benchmark` appends to)."""
        return tuple(f for f in self.files if f != MANIFEST)


def judge(measured_ms: float, predicted_ms: float | None, tolerance: float) -> tuple[bool | None, float | None]:
    """(passed, error percent) of a measurement against the prediction; (None, None) without one."""
    if predicted_ms is None or predicted_ms <= 0:
        return None, None
    error = 100.0 * (predicted_ms - measured_ms) / measured_ms
    return abs(measured_ms - predicted_ms) <= tolerance * predicted_ms, error


def require_deployable(backend: Backend) -> Deployer:
    """``backend`` in its :class:`Deployer` role; BadInputError for a local runtime or a cost model
    (nothing to deploy to) and for a remote device that cannot ship bundles."""
    if not isinstance(backend, RemoteDeviceBackend):
        raise BadInputError(
            f"backend '{backend.name}' is a {backend.kind.value}, not a remote device: there is nothing to deploy "
            "to (use `ofa-deploy benchmark` for targets on this machine)"
        )
    if not isinstance(backend, Deployer):
        raise BadInputError(
            f"backend '{backend.name}' cannot deploy bundles: it has no Deployer role (install, remote_sha256, "
            "benchmark_installed; see docs/fleet.md)"
        )
    return backend


def deploy_to_device(
    make: Callable[[], Backend],
    device: str,
    source: Path,
    bundle: BundleFiles,
    options: DeployOptions,
    previous: DeploymentRecord | None = None,
) -> DeploymentRecord:
    """Deploy the bundle in ``source`` to one device; every outcome is a record (nothing raises for
    a device fault). ``make`` builds the device's backend (called here, so it runs in the worker)."""
    started = time.monotonic()
    record = DeploymentRecord(
        device=device,
        status=FAILED,
        time=utc_now(),
        bundle=bundle.name,
        artifact=bundle.main,
        artifact_sha256=bundle.checksums[bundle.main],
        predicted_ms=bundle.predicted_ms,
        tolerance=options.tolerance,
        host=socket.gethostname(),
    )
    try:
        with make() as backend:
            _deploy(require_deployable(backend), Path(source), bundle, options, previous, record)
    except TargetUnavailableError as exc:
        record.status, record.reason = UNREACHABLE, str(exc)
    except OFADeployError as exc:
        record.status, record.reason = FAILED, str(exc)
    record.seconds = round(time.monotonic() - started, 3)
    return record


def _deploy(
    backend: Deployer,
    source: Path,
    bundle: BundleFiles,
    options: DeployOptions,
    previous: DeploymentRecord | None,
    record: DeploymentRecord,
) -> None:
    record.identity = backend.device_identity()
    if bundle.predicted_target is not None and bundle.predicted_ms is not None:
        predicted_on = TargetFingerprint.from_dict(bundle.predicted_target, f"{bundle.name}'s prediction")
        here = fingerprint_of_backend(backend, options.device_profile, record.identity)
        try:
            what = f"the prediction in {bundle.name}'s manifest"
            allow = options.allow_target_mismatch
            record.target_mismatch_allowed = check_same_target(what, predicted_on, "this device", here, allow)
        except BadInputError as exc:
            record.status, record.reason = TARGET_MISMATCH, str(exc)
            return
    remote_dir = f"{(options.remote_dir or backend.install_dir()).rstrip('/')}/{bundle.name}"
    record.remote_dir = remote_dir
    held = {name: backend.remote_sha256(f"{remote_dir}/{name}") for name in bundle.artifact_files}
    holds_bundle = all(held[name] == bundle.checksums[name] for name in held)
    completed_before = (
        previous is not None
        and previous.status in COMPLETED
        and previous.artifact_sha256 == record.artifact_sha256
        and previous.remote_dir == remote_dir
    )
    if holds_bundle and completed_before and not options.force:
        record.status = WOULD_SKIP if options.dry_run else SKIPPED
        record.reason = f"the device already holds this bundle (sha256 {record.artifact_sha256[:12]}); --force redoes"
        record.remote_sha256, record.verified_on_device = held, True
        for name in ("measured_ms", "latency_ms", "error_percent", "passed"):
            setattr(record, name, getattr(previous, name))
        return
    todo = [name for name in bundle.files if options.force or held.get(name) != bundle.checksums[name]]
    if options.dry_run:
        record.status = WOULD_INSTALL
        record.reason = f"would push {len(todo)} file(s) to {remote_dir}, check their sha256 there and benchmark"
        record.remote_sha256 = held
        return
    for name in todo:
        backend.install(source / name, f"{remote_dir}/{name}")
    record.remote_sha256 = {name: backend.remote_sha256(f"{remote_dir}/{name}") for name in bundle.files}
    wrong = [name for name in bundle.files if record.remote_sha256[name] != bundle.checksums[name]]
    if wrong:
        got = record.remote_sha256[wrong[0]]
        record.status = HASH_MISMATCH
        record.reason = (
            f"{remote_dir}/{wrong[0]} on the device has sha256 {got[:12] if got else 'none (missing)'}, "
            f"the bundle's is {bundle.checksums[wrong[0]][:12]} ({len(wrong)} file(s) differ): the copy is corrupt; "
            "check the device's storage and deploy again"
        )
        return
    record.verified_on_device = True
    reference = load_reference(backend, bundle.reference)
    stats = backend.benchmark_installed(f"{remote_dir}/{bundle.main}", reference)
    summary = stats.summary()
    record.measured_ms, record.latency_ms = stats.estimate, summary.get("latency_ms")
    record.passed, record.error_percent = judge(stats.estimate, bundle.predicted_ms, options.tolerance)
    if record.passed is False:
        record.status = OUT_OF_TOLERANCE
        off = 100.0 * abs(stats.estimate - bundle.predicted_ms) / bundle.predicted_ms  # what the tolerance bounds
        record.reason = (
            f"measured {stats.estimate:.3f} ms vs predicted {bundle.predicted_ms:.3f} ms: {off:.1f}% off the "
            f"prediction, beyond the tolerance of {100 * options.tolerance:.0f}%"
        )
    else:
        record.status = DEPLOYED


# A function that deploys to one device and returns its record: threads on this machine by
# default, or a cluster job (ofa_deploy.fleet.cluster).
DeviceJob = Callable[[str, DeploymentRecord | None], DeploymentRecord]


def deploy_fleet(
    directory: Path,
    devices: Sequence[str],
    job: DeviceJob,
    options: DeployOptions,
    progress: bool = True,
    cancel: Callable[[], None] | None = None,
) -> list[DeploymentRecord]:
    """Run ``job`` for every device at once; write each record as it arrives (not for --dry-run).
    Returns the records in the order of ``devices``.

    Ctrl-C stops waiting at once: what finished by then is recorded, ``cancel`` (e.g. the cluster's)
    stops the jobs still running, one line says which devices were left, and KeyboardInterrupt goes
    on to the CLI (exit 130). The jobs run in daemon threads, so a device that never answers cannot
    hold the process."""
    from tqdm import tqdm

    directory = Path(directory)
    arrived: queue.Queue[tuple[str, DeploymentRecord | BaseException]] = queue.Queue()

    def run(device: str, previous: DeploymentRecord | None) -> None:
        try:
            arrived.put((device, job(device, previous)))
        except OFADeployError as exc:  # a job that could not even start (e.g. a cluster refusing it)
            status = UNREACHABLE if isinstance(exc, TargetUnavailableError) else FAILED
            arrived.put((device, DeploymentRecord(device, status, utc_now(), directory.name, reason=str(exc))))
        except BaseException as exc:  # anything unforeseen: re-raised on the main thread
            arrived.put((device, exc))

    records: dict[str, DeploymentRecord] = {}

    def take(device: str, outcome: DeploymentRecord | BaseException) -> None:
        if isinstance(outcome, BaseException):
            raise outcome
        records[device] = outcome
        if not options.dry_run:
            write_record(directory, outcome)

    bar = tqdm(total=len(devices), desc="deploying", unit="device", disable=not progress or None, file=sys.stderr)
    try:
        for device in devices:
            previous = read_record(directory, device)
            threading.Thread(target=run, args=(device, previous), name=f"deploy-{device}", daemon=True).start()
        while len(records) < len(devices):
            try:
                take(*arrived.get(timeout=0.5))
            except queue.Empty:
                continue
            bar.update(1)
    except KeyboardInterrupt:
        _stop(directory, devices, records, arrived, take, cancel, options.dry_run)
        raise
    finally:
        bar.close()
    return [records[device] for device in devices]


def _stop(directory, devices, records, arrived, take, cancel, dry_run: bool) -> None:
    """After Ctrl-C: keep what has arrived, cancel the rest, say what is left (one line)."""
    while not arrived.empty():
        with contextlib.suppress(Exception):  # an unforeseen error of one job is not a record
            take(*arrived.get_nowait())
    if cancel is not None:
        cancel()
    left = [d for d in devices if d not in records]
    where = "" if dry_run else f" (records in {directory / RECORDS_DIR}/)"
    log.info(
        f"interrupted: {len(records)} of {len(devices)} device(s) finished{where}; stopped waiting for "
        f"{', '.join(left) or 'none'}: no record written for them; run deploy again to complete them"
    )


class LocalJob:
    """A ``DeviceJob`` that deploys from this machine (``specs`` maps each device to its BackendSpec);
    ``cancel()`` (Ctrl-C) closes the backends still at work."""

    def __init__(self, specs: dict, source: Path, bundle: BundleFiles, options: DeployOptions) -> None:
        self.specs, self.source, self.bundle, self.options = specs, source, bundle, options
        self._live: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def __call__(self, device: str, previous: DeploymentRecord | None) -> DeploymentRecord:
        def make() -> Backend:
            backend = self.specs[device].create()
            with self._lock:
                self._live[device] = backend
            return backend

        try:
            return deploy_to_device(make, device, self.source, self.bundle, self.options, previous)
        finally:
            with self._lock:
                self._live.pop(device, None)

    def cancel(self) -> None:
        """Close each backend still in use, each in a daemon thread: its clean-up may wait on the device
        (a command in flight holds the connection), and that must not hold the process (exit 130 now;
        the device's lock, left by a process that is gone, is taken over by the next run)."""
        with self._lock:
            live = list(self._live.values())
        for backend in live:
            threading.Thread(target=backend.close, name="deploy-cancel", daemon=True).start()


def local_job(specs: dict, source: Path, bundle: BundleFiles, options: DeployOptions) -> LocalJob:
    """Deploy from this machine: ``specs`` maps each device to its BackendSpec."""
    return LocalJob(specs, source, bundle, options)


def exit_code(records: Sequence[DeploymentRecord]) -> int:
    """3 when any device was unreachable, 2 when any is another target than the bundle's prediction,
    1 when any deployment failed otherwise, else 0."""
    if any(r.status == UNREACHABLE for r in records):
        return 3
    if any(r.status == TARGET_MISMATCH for r in records):
        return 2
    if any(r.status in (FAILED, HASH_MISMATCH, OUT_OF_TOLERANCE) for r in records):
        return 1
    return 0
