"""Device hosts joined by Ray: each host advertises its attached devices as custom resources, and
profiling shards and deploy jobs run as Ray tasks on the host that holds their device.

A host with devices joins the cluster with::

    ray start --address HEAD:6379 --resources "$(python -m ofa_deploy.fleet.cluster resources \\
        --backend adb --model pixel2 --serial 192.168.1.23:5555 --serial 192.168.1.24:5555)"

which advertises one resource per device, ``ofa-device:<backend>:<model>:<device id>`` (amount 1:
one job per device at a time), and ``ofa-model:<backend>:<model>`` (how many such devices the host
has). ``--cluster HEAD:6379`` on ``profile`` and ``deploy`` then finds the devices of the backend
(and of the device profile's model, when ``--device`` names one) from the cluster's nodes and
requests each job with its device's resource, so Ray places it on the right host. Ray retries a
job whose worker or host died (``max_retries``); a shard resumes from what its host saved. A
device fault (the phone went away) is not retried by Ray: it is that device's result, as locally.
Nothing here schedules: placement, retries and transport are Ray's.

The driver does not take a host's word for anything: each job answers with JSON bytes that the
driver checks (:mod:`ofa_deploy.fleet.replies`), and keeps its files in a directory of its own
inside a 0700 directory of the user on its host (docs/fleet.md, "What a Ray cluster trusts").
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ofa_deploy.backend.interface import RemoteDeviceBackend, require_module
from ofa_deploy.backend.timing import LatencyStats, Reference, TimingOptions
from ofa_deploy.errors import BadInputError, OFADeployError, TargetUnavailableError
from ofa_deploy.files import atomic_write_bytes, atomic_write_json, atomic_write_text, strict_json
from ofa_deploy.fleet.deploy import BundleFiles, DeployOptions, DeviceJob, deploy_to_device
from ofa_deploy.fleet.records import DeploymentRecord, device_file_name
from ofa_deploy.fleet.replies import answer, decode, field_of, invalid, stats_from_plain
from ofa_deploy.fleet.sharding import Shard
from ofa_deploy.fleet.targets import BackendSpec
from ofa_deploy.graph.ir import Graph
from ofa_deploy.latency.table import LatencyTable

DEVICE_PREFIX = "ofa-device:"
MODEL_PREFIX = "ofa-model:"
ANY_MODEL = "any"
MAX_RETRIES = 3  # reruns of a job whose worker or host was lost
LOCAL = "local"  # Ray's address for "start a new cluster on this machine"

log = logging.getLogger(__name__)


def _ray():
    return require_module("cluster", "farm", "ray")


def device_resources(backend: str, model: str, devices: list[str]) -> dict[str, float]:
    """The custom resources a host with these devices advertises (``ray start --resources``)."""
    if ":" in model or not model:
        raise BadInputError(f"--model {model!r}: give a device profile name without ':'")
    out: dict[str, float] = {f"{DEVICE_PREFIX}{backend}:{model}:{d}": 1.0 for d in devices}
    out[f"{MODEL_PREFIX}{backend}:{model}"] = float(len(devices))
    return out


def parse_device_resource(name: str) -> tuple[str, str, str] | None:
    """``ofa-device:adb:pixel2:10.0.0.5:5555`` -> (backend, model, device id)."""
    if not name.startswith(DEVICE_PREFIX):
        return None
    parts = name[len(DEVICE_PREFIX) :].split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def _node() -> str:
    return _ray().get_runtime_context().get_node_id()


def private_root() -> Path:
    """This user's directory for cluster jobs on this host, ``<temp dir>/ofa-deploy-cluster-<uid>``:
    created 0700, and refused when it is a link, someone else's, or open to others (who could then
    swap the files a job pushes to its device)."""
    root = Path(tempfile.gettempdir()) / f"ofa-deploy-cluster-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
    except OSError as exc:
        raise OFADeployError(f"host {socket.gethostname()}: cannot create {root} ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise OFADeployError(
            f"host {socket.gethostname()}: {root} is not a private directory of this user (a directory owned by "
            f"uid {os.getuid()}, mode 0700, not a link); remove it and rerun"
        )
    return root


def _inside(directory: Path, name: str) -> Path:
    """``directory / name`` for a bundle file name, which must stay inside ``directory``."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise BadInputError(f"bundle file name {name!r} is not a plain relative path")
    return directory / name


# ---------------------------------------------------------------------- what runs on a host
# Each job answers with JSON bytes (ofa_deploy.fleet.replies), never with pickled objects.


def _run_shard(shard: Shard, spec: BackendSpec, device_profile: str, token: str, saved: dict | None) -> bytes:
    """A profiling shard on the device's host, resumable there: its file lives in this user's private
    directory under this shard's token, so a retry after a lost worker continues it; ``saved`` is
    the driver's copy of an earlier run's shard (``--resume``). Removed once the shard is complete
    (the driver keeps it from then on)."""

    def work() -> dict[str, Any]:
        from ofa_deploy.fleet.profiling import profile_shard

        directory = private_root() / token
        directory.mkdir(mode=0o700, exist_ok=True)
        local = directory / f"{device_file_name(spec.device)}.json"
        if saved is not None and not local.exists():
            atomic_write_text(local, strict_json(saved), mode=0o600)
        table = profile_shard(Shard(shard.device, shard.plan, local), spec, device_profile, resume=True)
        document = table.to_document()
        shutil.rmtree(directory, ignore_errors=True)
        return {"table": document}

    return answer(work, _node)


def _run_deploy(
    device: str,
    spec: BackendSpec,
    files: dict[str, bytes],
    bundle: BundleFiles,
    options: DeployOptions,
    previous: dict | None,
) -> bytes:
    """A deploy job on the device's host: the bundle's files arrive through Ray's object store and
    are written (atomically, 0600) into a directory of this job's own, removed afterwards, so jobs
    for two devices of one host never touch each other's copy."""

    def work() -> dict[str, Any]:
        source = Path(tempfile.mkdtemp(prefix="deploy-", dir=private_root()))
        try:
            for name, data in files.items():
                atomic_write_bytes(_inside(source, name), data, mode=0o600)
            before = DeploymentRecord.from_dict(previous) if previous else None
            record = deploy_to_device(spec.create, device, source, bundle, options, before)
        finally:
            shutil.rmtree(source, ignore_errors=True)
        return {"record": record.to_dict()}

    return answer(work, _node)


def _run_measure(spec: BackendSpec, models: list, reference: tuple[str, float | None] | None) -> bytes:
    """Time a batch of models on the device's host (a fresh session per batch: the job may land on
    a new host after a loss); with ``reference`` (key, baseline) normalised like everywhere else."""

    def work() -> dict[str, Any]:
        with spec.create() as backend:
            ref = backend.reference(*reference) if reference is not None else None
            stats = backend.measure_models(models, ref) if models else []
            baseline = ref.baseline_ms if ref is not None else None
        return {"stats": [s.to_dict() for s in stats], "baseline": baseline}

    return answer(work, _node)


def _run_check(spec: BackendSpec) -> bytes:
    def work() -> dict[str, Any]:
        with spec.create() as backend:
            return {"info": backend.check()}

    return answer(work, _node)


# ---------------------------------------------------------------------- the driver's side


class Cluster:
    """A connection to a Ray cluster of device hosts (``--cluster ADDRESS``)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.placements: dict[str, str] = {}  # device -> Ray node id that ran its last job
        self.token = uuid.uuid4().hex[:12]
        self._running: set = set()  # ObjectRefs of the jobs in flight (cancel() stops them)
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, address: str) -> Cluster:
        ray = _ray()
        if not ray.is_initialized():
            if address == LOCAL:
                log.info(
                    "--cluster local: starting a new single-node Ray cluster on this machine for this command "
                    "(it knows no device host; give HEAD:PORT to use an existing cluster)"
                )
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise TargetUnavailableError(
                    f"cannot join the Ray cluster at {address} ({str(exc).splitlines()[0][:160]}); start it with "
                    "`ray start --head` (docs/fleet.md)"
                ) from None
        return cls(address)

    def nodes_with_devices(self) -> list[tuple[str, str, str, str]]:
        """(node id, backend, model, device id) for every device an alive node advertises."""
        found = []
        for node in _ray().nodes():
            if not node.get("Alive"):
                continue
            for name in node.get("Resources", {}):
                parsed = parse_device_resource(name)
                if parsed:
                    found.append((node["NodeID"], *parsed))
        return found

    def devices(self, backend: str, model: str | None = None) -> list[str]:
        """Device ids the cluster advertises for ``backend`` (and ``model``), in a stable order."""
        return sorted(
            {d for _, b, m, d in self.nodes_with_devices() if b == backend and (model in (None, m) or m == ANY_MODEL)}
        )

    def resource(self, backend: str, device: str) -> str:
        names = [
            f"{DEVICE_PREFIX}{b}:{m}:{d}" for _, b, m, d in self.nodes_with_devices() if b == backend and d == device
        ]
        if not names:
            raise TargetUnavailableError(
                f"no host of the cluster at {self.address} advertises {backend} device {device} "
                "(see `ray status`; a host joins with `ray start --resources ...`, docs/fleet.md)"
            )
        return names[0]

    def _call(self, fn: Callable, device: str, spec: BackendSpec, *args: Any) -> dict:
        """Run ``fn(*args)`` on the host holding ``device``; its checked result (replies.decode)."""
        ray = _ray()
        task = ray.remote(fn).options(
            num_cpus=0, resources={self.resource(spec.backend, device): 1}, max_retries=MAX_RETRIES
        )
        ref = task.remote(*args)
        with self._lock:
            self._running.add(ref)
        try:
            raw = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            raise OFADeployError(f"{device}: the job was cancelled") from None
        except ray.exceptions.RayTaskError as exc:  # the job raised outside its own error handling
            last = str(exc).strip().splitlines()[-1:] or ["unknown error"]
            raise OFADeployError(f"{device}: the job failed on its host: {last[0][:300]}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.RayError) as exc:
            raise TargetUnavailableError(
                f"{device}: its host was lost {MAX_RETRIES + 1} times ({type(exc).__name__}); check the host and "
                "rerun (with --resume for profile)"
            ) from None
        finally:
            with self._lock:
                self._running.discard(ref)
        result, node = decode(device, raw)
        self.placements[device] = node
        return result

    def cancel(self) -> None:
        """Stop every job still in flight (Ctrl-C): Ray kills their workers; they are not retried."""
        ray = _ray()
        with self._lock:
            running = list(self._running)
        for ref in running:
            with contextlib.suppress(Exception):  # best effort: the job may have just finished
                ray.cancel(ref, force=True)

    def shard_job(self):
        """A ``ShardJob`` (see ofa_deploy.fleet.profiling) that runs the shard on its device's host."""

        def job(shard: Shard, spec: BackendSpec, device_profile: str, resume: bool, on_batch) -> LatencyTable:
            saved = json.loads(shard.path.read_text()) if resume and shard.path.is_file() else None
            token = f"{self.token}-{hashlib.sha1(str(shard.path.resolve()).encode()).hexdigest()[:8]}"
            out = self._call(_run_shard, shard.device, spec, shard, spec, device_profile, token, saved)
            table = field_of(shard.device, out, "table", dict)  # load() below checks it like any table
            atomic_write_json(shard.path, table, indent=1)  # the driver keeps every shard
            on_batch(len(shard.plan.ops))
            return LatencyTable.load(shard.path)

        return job

    def deploy_job(
        self, specs: dict[str, BackendSpec], directory: Path, bundle: BundleFiles, options: DeployOptions
    ) -> DeviceJob:
        """A ``DeviceJob`` that deploys on the device's host (the bundle is shipped once, by reference)."""
        ray = _ray()
        files = ray.put({name: (Path(directory) / name).read_bytes() for name in bundle.files})

        def job(device: str, previous: DeploymentRecord | None) -> DeploymentRecord:
            spec = specs[device]
            before = previous.to_dict() if previous else None
            out = self._call(_run_deploy, device, spec, device, spec, files, bundle, options, before)
            try:
                record = DeploymentRecord.from_dict(out.get("record"))
            except ValueError as exc:
                raise invalid(device, f"record: {exc}") from None
            if record.device != device or record.bundle != bundle.name:
                raise invalid(device, f"a record for {record.device!r} / bundle {record.bundle!r}")
            return record

        return job


class ClusterDevice(RemoteDeviceBackend):
    """One device of the cluster as a backend on the driver: every batch of models is a Ray job on
    the device's host (``validate --cluster``, through :class:`ofa_deploy.fleet.composite.FleetBackend`)."""

    def __init__(self, cluster: Cluster, spec: BackendSpec) -> None:
        from ofa_deploy.backend.registry import backend_class

        cls = backend_class(spec.backend)
        self.cluster, self.spec = cluster, spec
        self.name, self.description, self.extra = cls.name, cls.description, cls.extra
        self.artifact_kinds, self.batch_size = cls.artifact_kinds, spec.settings.get("batch_size", cls.batch_size)
        self.timing = TimingOptions(**spec.timing)
        self.settings = cls.Settings(**spec.settings)
        self._encoder = cls(self.timing, **spec.settings)  # builds model files here; never connects

    def runtime_info(self) -> dict[str, str]:
        return self._encoder.runtime_info()

    def check(self) -> dict[str, Any]:
        out = self.cluster._call(_run_check, self.spec.device, self.spec, self.spec)
        return field_of(self.spec.device, out, "info", dict)

    def open(self) -> None:
        self.check()

    def close(self) -> None:
        self._encoder.close()

    def encode(self, graph: Graph) -> bytes:
        return self._encoder.encode(graph)

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        if baseline_ms is None:  # measure the baseline on the device now
            out = self.cluster._call(_run_measure, self.spec.device, self.spec, self.spec, [], (key, None))
            baseline_ms = field_of(self.spec.device, out, "baseline", (int, float))
        return Reference(key, None, baseline_ms)

    def measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        ref = (reference.key, reference.baseline_ms) if reference is not None else None
        out = self.cluster._call(_run_measure, self.spec.device, self.spec, self.spec, list(models), ref)
        return stats_from_plain(self.spec.device, out.get("stats"), len(models))


def main(argv: list[str] | None = None) -> int:
    """``python -m ofa_deploy.fleet.cluster resources ...``: the ``--resources`` JSON for ``ray start``."""
    p = argparse.ArgumentParser(prog="python -m ofa_deploy.fleet.cluster")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("resources", help="print the --resources JSON this host's devices advertise")
    r.add_argument("--backend", required=True, help="backend that reaches the devices, e.g. adb")
    r.add_argument("--model", default=ANY_MODEL, help="device profile name they match (default: any)")
    r.add_argument("--serial", action="append", required=True, help="a device id (repeat for each)")
    args = p.parse_args(argv)
    try:
        print(json.dumps(device_resources(args.backend, args.model, args.serial)))
    except OFADeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
