"""Android phone CPU over ADB: TFLite ``benchmark_model`` run on the device, driven by adb-shell.

The toolkit pushes the user's ``benchmark_model`` binary and one ``.tflite`` per operator to a
device directory, and times a whole batch of models per round trip (one shell script, each model
followed by the reference operator, so entries are normalised exactly like on the host; see
:mod:`ofa_deploy.backend.timing`). Setup, settings and what was tested: docs/adb.md.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shlex
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ofa_deploy.backend.artifact import TFLITE, Artifact
from ofa_deploy.backend.diagnosis import Finding
from ofa_deploy.backend.interface import (
    BackendStatus,
    CliOption,
    Deployer,
    OutputParser,
    RemoteDeviceBackend,
    Target,
    require_module,
)
from ofa_deploy.backend.quantization import check_precision
from ofa_deploy.backend.settings import LOCAL, BackendSettings, setting
from ofa_deploy.backend.timing import LatencyStats, Reference, TimingOptions
from ofa_deploy.backend.tool_output import ToolRun
from ofa_deploy.backends.adb.batch import BenchmarkCommand, batch_script, parse_batch_output, stats_from_rounds
from ofa_deploy.backends.adb.benchmark_model_output import (
    BenchmarkBinaryMissingError,
    BenchmarkFailedError,
    parse_benchmark_output,
)
from ofa_deploy.backends.adb.connection import (
    AdbConnection,
    ConnectionSettings,
    DeviceSession,
    config_dir,
    list_adb_devices,
)
from ofa_deploy.backends.adb.lock import DeviceLock, forget
from ofa_deploy.backends.tflite import TFLiteBackend, tflite_artifact, tflite_model
from ofa_deploy.errors import BadInputError, TargetUnavailableError
from ofa_deploy.graph.ir import Graph, build_graph
from ofa_deploy.space.ops import OpSpec

__all__ = [
    "AdbBackend",
    "BenchmarkBinaryMissingError",
    "BenchmarkFailedError",
    "list_adb_devices",
    "parse_benchmark_output",
]

DEFAULT_DEVICE_DIR = "/data/local/tmp/ofa-deploy"
DEFAULT_INSTALL_DIR = "/data/local/tmp/ofa-deploy-installed"  # deployed bundles (kept; not cleaned up)
BINARY_ENV = "OFA_DEPLOY_BENCHMARK_MODEL"
SERIAL_ENV = "ANDROID_SERIAL"  # the variable adb itself reads
FREQUENCY_CHECKS = 3
BINARY, MODELS, SCRIPT = "benchmark_model", "models", "batch.sh"  # inside the device directory


@dataclass(frozen=True)
class AdbSettings(BackendSettings):
    """Settings of the adb backend (device profile ``settings:``); local ones are never recorded."""

    serial: str | None = setting(
        None,
        "host:port for ADB over TCP/Wi-Fi, or a USB serial (default: $ANDROID_SERIAL, else the only USB device)",
        LOCAL,
    )
    benchmark_model: str | None = setting(
        None, f"host path of the Android benchmark_model binary (default: ${BINARY_ENV})", LOCAL
    )
    device_dir: str = setting(DEFAULT_DEVICE_DIR, "device directory for the binary and models", LOCAL)
    taskset: str | None = setting(None, "hex CPU mask benchmark_model is pinned to, e.g. 'f0' for cores 4-7")
    xnnpack: bool = setting(True, "use the XNNPACK delegate")
    precision: str = setting("fp32", "fp32, or int8: full-integer .tflite (benchmark_model runs it as is)")
    cooldown_s: float = setting(0.0, "seconds to sleep between timing rounds on the phone")
    min_freq_khz: int = setting(
        0, "before each batch, the pinned cores must reach this frequency under load (0: no check)"
    )
    batch_size: int = setting(32, "models timed per round trip")
    retries: int = setting(3, "reconnection attempts after a dropped connection", LOCAL)
    retry_delay_s: float = setting(1.0, "first back-off delay in seconds, doubled after each try", LOCAL)
    connect_timeout_s: float = setting(10.0, "timeout for connecting and for short requests", LOCAL)
    command_timeout_s: float = setting(600.0, "longest silence allowed while a batch runs on the phone", LOCAL)
    auth_timeout_s: float = setting(30.0, "time to accept the 'Allow USB debugging?' prompt", LOCAL)
    busy_timeout_s: float = setting(
        300.0, "how long to wait for another ofa-deploy run that is using the phone (then exit 2)", LOCAL
    )
    key_path: str | None = setting(None, "RSA key for ADB authentication (default: ~/.config/ofa-deploy/adbkey)", LOCAL)
    cleanup: bool = setting(True, "remove the pushed binary and models from the device when done", LOCAL)
    install_dir: str = setting(
        DEFAULT_INSTALL_DIR, "device directory `ofa-deploy deploy` installs bundles under", LOCAL
    )

    def validate(self) -> None:
        check_precision("adb", self.precision, ("fp32", "int8"), "fp16 runs through the GPU delegate, not built")
        for name in (
            "cooldown_s",
            "min_freq_khz",
            "retries",
            "retry_delay_s",
            "connect_timeout_s",
            "command_timeout_s",
            "auth_timeout_s",
            "busy_timeout_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size: must be positive")
        if not self.install_dir.startswith("/"):
            raise ValueError(f"install_dir: must be an absolute device path, got {self.install_dir!r}")
        if not self.device_dir.startswith("/") or not self.device_dir.strip("/"):
            raise ValueError(f"device_dir: must be an absolute device path below /, got {self.device_dir!r}")
        if self.taskset:
            try:
                cores_in_mask(self.taskset.lower().removeprefix("0x"))
            except BadInputError as exc:
                raise ValueError(str(exc).removeprefix("adb setting ")) from None


def cores_in_mask(mask: str) -> list[int]:
    """CPU numbers in a hex taskset mask ("f0" -> [4, 5, 6, 7])."""
    try:
        bits = int(mask, 16)
    except ValueError:
        raise BadInputError(f"adb setting 'taskset': '{mask}' is not a hex CPU mask such as 'f0'") from None
    if bits <= 0:
        raise BadInputError(f"adb setting 'taskset': '{mask}' selects no CPU")
    return [i for i in range(bits.bit_length()) if bits >> i & 1]


def _cleanup_device(connection: AdbConnection, directory: str, enabled: bool, lock: DeviceLock) -> None:
    """Remove what this backend put on the phone (only its own files) and unlock it, both only while
    the device lock is still this run's (checked on the device); then hang up."""
    command = ""
    if enabled:
        files = shlex.join([f"{directory}/{BINARY}", f"{directory}/{SCRIPT}"])
        models = shlex.quote(f"{directory}/{MODELS}")
        command = f"rm -rf {models}; rm -f {files}; rmdir {shlex.quote(directory)} 2>/dev/null;"
    connection.if_connected(lambda session: session.shell(lock.guarded(command)))
    forget(lock)
    connection.close()


def configured_binary(setting: str | None) -> Path | None:
    """The host's benchmark_model binary that the profile setting, else $OFA_DEPLOY_BENCHMARK_MODEL,
    names (``~`` expanded); None when neither does."""
    value = setting or os.environ.get(BINARY_ENV)
    return Path(os.path.expanduser(str(value))) if value else None


class AdbBackend(RemoteDeviceBackend, Deployer, OutputParser):
    """The phone measures: this machine's load does not bias the figures."""

    name = "adb"
    extra = "adb"
    description = "Android phone CPU over ADB, TFLite benchmark_model"
    tool_name = "benchmark_model"
    artifact_kinds = (TFLITE,)
    no_target_reason = "no phone in `adb devices` (or give --serial HOST:PORT)"
    Settings = AdbSettings
    settings: AdbSettings
    cli_options = (
        CliOption(
            "--serial",
            "serial",
            "phone to use: USB serial or HOST:PORT (default: $ANDROID_SERIAL)",
            metavar="S",
            repeatable=True,
        ),
    )

    def __init__(
        self, timing: TimingOptions | None = None, settings_source: str | None = None, **settings: Any
    ) -> None:
        super().__init__(timing, settings_source, **settings)
        s = self.settings
        self.batch_size = s.batch_size
        self.cooldown_s = s.cooldown_s
        self.min_freq_khz = s.min_freq_khz
        self.taskset = s.taskset.lower().removeprefix("0x") if s.taskset else None
        self.device_dir = s.device_dir.rstrip("/")
        self.serial = s.serial or os.environ.get(SERIAL_ENV) or None
        self._lock = DeviceLock.beside(self.device_dir)  # one run at a time on the phone (adb_lock)
        self._connection: AdbConnection | None = None
        self._ready = False
        self._references: dict[str, str] = {}  # reference key -> device path
        self._batches = 0

    # ------------------------------------------------------------------ configuration
    @property
    def binary_path(self) -> Path:
        path = configured_binary(self.settings.benchmark_model)
        if path is None:
            raise TargetUnavailableError(
                "the adb backend needs the Android benchmark_model binary: set 'benchmark_model' in the device "
                f"profile's settings or ${BINARY_ENV} (where to get it: docs/adb.md)"
            )
        if not path.is_file():
            raise TargetUnavailableError(f"benchmark_model binary {path} does not exist (where to get it: docs/adb.md)")
        return path

    @property
    def device_binary(self) -> str:
        return f"{self.device_dir}/{BINARY}"

    def _in_device_dir(self, command: str) -> str:
        """Run ``command`` from the device directory: scripts then name files relative to it, so
        no device path ever has to be written inside a pushed file."""
        return f"cd {shlex.quote(self.device_dir)} && {command}"

    @cached_property
    def command(self) -> BenchmarkCommand:
        return BenchmarkCommand(f"./{BINARY}", self.timing, self.settings.xnnpack, self.taskset)

    def connection(self) -> AdbConnection:
        """The device connection, opened on first use; the phone is cleaned up when the backend goes."""
        if self._connection is None:
            require_module(self.name, self.extra, "adb_shell", "adb-shell")
            s = self.settings
            self._connection = AdbConnection(
                ConnectionSettings(
                    serial=self.serial,
                    key_path=Path(os.path.expanduser(s.key_path)) if s.key_path else config_dir() / "adbkey",
                    transport_timeout_s=s.connect_timeout_s,
                    command_timeout_s=s.command_timeout_s,
                    auth_timeout_s=s.auth_timeout_s,
                    retries=s.retries,
                    retry_delay_s=s.retry_delay_s,
                )
            )
            self._finalizer = weakref.finalize(
                self,
                _cleanup_device,
                self._connection,
                self.device_dir,
                self.settings.cleanup,
                self._lock,
            )
        return self._connection

    def close(self) -> None:
        """Clean the device directory and hang up now (otherwise done when the backend is garbage-collected)."""
        if self._connection is not None:
            self._finalizer()
            self._connection = None
            self._ready = False
            self._references.clear()

    # ------------------------------------------------------------------ Backend API
    def runtime_info(self) -> dict[str, str]:
        require_module(self.name, self.extra, "adb_shell", "adb-shell")
        info = {"runtime": "TFLite benchmark_model over adb-shell", "runtime_version": metadata.version("adb-shell")}
        binary = self.settings.benchmark_model or os.environ.get(BINARY_ENV)
        if binary and Path(os.path.expanduser(str(binary))).is_file():
            info["runtime_version"] += f", benchmark_model sha256:{self._binary_digest}"
        return info

    @cached_property
    def _binary_digest(self) -> str:
        return hashlib.sha256(self.binary_path.read_bytes()).hexdigest()[:12]

    @property
    def target_id(self) -> str | None:
        """The phone's serial (``--serial``, else $ANDROID_SERIAL); None: the only phone attached."""
        return self.serial

    @classmethod
    def readiness(cls, settings: dict[str, Any], status: BackendStatus) -> str:
        """Ready: adb-shell installed, the benchmark_model binary configured and found, and a phone
        the adb server lists as authorized (a phone reached by --serial HOST:PORT is not listed)."""
        binary = configured_binary(settings.get("benchmark_model"))
        if binary is None:
            missing = f"no benchmark_model binary (profile setting 'benchmark_model' or ${BINARY_ENV})"
        else:
            missing = "" if binary.is_file() else f"benchmark_model {binary} does not exist"
        return "; ".join(filter(None, [missing, super().readiness(settings, status)]))

    @classmethod
    def attached_targets(cls) -> list[Target]:
        """Phones the local adb server sees (empty when no server runs); ready when authorized and online."""
        return [Target(d["serial"], d["state"], d["state"] == "device") for d in list_adb_devices()]

    def check(self) -> dict[str, Any]:
        """Connect, report the phone (model, ABI, Android version, CPU governor) and install the binary."""
        info = {**self.runtime_info(), "threads": self.timing.threads, "target": self.description}
        self.binary_path  # noqa: B018  (fails early, with the hint, when the binary is not configured)
        core = cores_in_mask(self.taskset)[0] if self.taskset else 0
        props = {
            "manufacturer": "ro.product.manufacturer",
            "model": "ro.product.model",
            "abi": "ro.product.cpu.abi",
            "android": "ro.build.version.release",
            "sdk": "ro.build.version.sdk",
            "platform": "ro.board.platform",
        }
        command = "; ".join(f"echo {name}=$(getprop {prop})" for name, prop in props.items())
        command += f"; echo governor=$(cat /sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor 2>/dev/null)"

        def probe(session: DeviceSession) -> str:
            out = session.shell(command)
            self._ensure_ready(session)
            return out

        out = self.connection().call(probe, "reading the device's properties")
        found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        device = {name: found.get(name, "").strip() for name in [*props, "governor"]}
        return {  # what the phone is, recorded in tables and bundles; never which phone (the serial)
            **info,
            **device,
            "taskset": self.taskset or "",
            "xnnpack": self.command.xnnpack,
        }

    def open(self) -> None:
        """Connect and install benchmark_model (``check`` does this; measuring does it on first use)."""
        self.connection().call(self._ensure_ready, "preparing the device")

    def encode(self, graph: Graph) -> bytes:
        return tflite_model(graph, self.precision)

    def diagnose_target(self) -> list[Finding]:
        """The binary, the adb server, and every phone (backends/adb/doctor.py)."""
        from ofa_deploy.backends.adb import doctor

        return doctor.diagnose(self, configured_binary(self.settings.benchmark_model))

    @classmethod
    def parse_output(cls, text: str, model: str | None = None) -> ToolRun:
        return parse_benchmark_output(text, model)

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        """Push the reference operator; without a baseline, time it alone now (at profiling time)."""
        path = self._reference_path(key)
        if baseline_ms is None:
            rounds = max(self.timing.rounds, 9)
            baseline_ms = self._run_batch([key], [path], [], None, rounds)[0].raw_estimate
        return Reference(key, None, baseline_ms)

    def compile(self, graph: Graph, directory: Path) -> Artifact:
        return tflite_artifact(graph, directory, self.precision, self.calibration_inputs)

    def load_artifact(self, directory: Path, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray]:
        """Run the artifact with the host's LiteRT interpreter: the same .tflite file the phone runs,
        for numerical checks (the phone's benchmark_model does not return outputs)."""
        host = TFLiteBackend(self.timing, xnnpack=self.settings.xnnpack)
        return host.load_artifact(directory, artifact)

    def measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        """Push the models and time them in one script on the phone (one round trip)."""
        paths = [
            f"{MODELS}/" + (names[i] if names else f"m{self._batches}-{i}-{hashlib.sha1(data).hexdigest()[:12]}.tflite")
            for i, (_, data) in enumerate(models)
        ]
        return self._run_batch(
            [label for label, _ in models], paths, [data for _, data in models], reference, self.timing.rounds
        )

    # ------------------------------------------------------------------ deployment (docs/fleet.md)
    def device_identity(self) -> dict[str, Any]:
        """What :meth:`check` reports, plus the serial (a deployment record is about one phone)."""
        return {**self.check(), "serial": self.serial or "usb"}

    def install_dir(self) -> str:
        return self.settings.install_dir.rstrip("/")

    def install(self, local_path: Path, remote_path: str) -> None:
        """Push one file (mode 0644) through the sync protocol, creating its directory first."""
        data = Path(local_path).read_bytes()
        parent = remote_path.rsplit("/", 1)[0] or "/"

        def push(session: DeviceSession) -> None:
            out = session.shell(f"mkdir -p {shlex.quote(parent)} && echo ready")
            if "ready" not in out:
                raise TargetUnavailableError(f"cannot create {parent} on the device: {out.strip()[:160]}")
            session.push(data, remote_path)

        self.connection().call(push, f"installing {remote_path}")

    def remote_sha256(self, remote_path: str) -> str | None:
        """``sha256sum`` on the phone (toybox's on Android 7+); None when the file is not there."""
        path = shlex.quote(remote_path)
        command = (
            f"if [ -f {path} ]; then sha256sum {path} 2>/dev/null || toybox sha256sum {path}; else echo absent; fi"
        )
        out = self.connection().shell(command, f"hashing {remote_path}").strip()
        if out == "absent":
            return None
        digest = out.split()[0].lower() if out else ""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise TargetUnavailableError(f"the device cannot hash {remote_path} (sha256sum said: {out[:120]!r})")
        return digest

    def benchmark_installed(self, remote_path: str, reference: Reference | None = None) -> LatencyStats:
        """Run benchmark_model on the installed file where it is (nothing is pushed or removed). The
        batch script runs in the device directory and names the file relative to it, as it does
        every model (no device path is written inside a pushed file)."""
        relative = posixpath.relpath(remote_path, self.device_dir)
        return self._run_batch([remote_path], [relative], [], reference, self.timing.rounds)[0]

    # ------------------------------------------------------------------ device work
    def _ensure_ready(self, session: DeviceSession) -> None:
        """Lock the device directory (waiting for another run), create it and install benchmark_model
        (again only if it changed)."""
        if self._ready:
            return
        self._lock.acquire(session, self.settings.busy_timeout_s, self.serial)
        models = f"{self.device_dir}/{MODELS}"
        out = session.shell(f"mkdir -p {shlex.quote(models)} && echo ready")
        if "ready" not in out:
            raise TargetUnavailableError(f"cannot create {models} on the device: {out.strip()[:160]}")
        local = self.binary_path
        local_stat = local.stat()
        _, size, mtime = session.stat(self.device_binary)
        if size != local_stat.st_size or mtime != int(local_stat.st_mtime):
            session.device.push(
                str(local),
                self.device_binary,
                st_mode=0o100755,
                mtime=int(local_stat.st_mtime),
                transport_timeout_s=session.settings.transport_timeout_s,
                read_timeout_s=session.settings.transport_timeout_s,
            )
        session.shell(f"chmod 755 {shlex.quote(self.device_binary)}")
        self._ready = True

    def _push_model(self, session: DeviceSession, data: bytes, path: str) -> None:
        """Push a model to ``path``, relative to the device directory."""
        self._ensure_ready(session)
        session.push(data, f"{self.device_dir}/{path}")

    def _reference_path(self, key: str) -> str:
        if key not in self._references:
            data = tflite_model(build_graph([OpSpec.from_key(key)]), self.precision)
            path = f"{MODELS}/reference-{hashlib.sha1(key.encode()).hexdigest()[:12]}.tflite"
            self.connection().call(lambda session: self._push_model(session, data, path), "pushing the reference")
            self._references[key] = path
        return self._references[key]

    def _check_frequency(self, session: DeviceSession) -> None:
        """Before a batch: under a short busy loop, the pinned cores must reach ``min_freq_khz``
        (an idle core sits low on purpose; a throttled one stays low under load)."""
        if not self.min_freq_khz:
            return
        cores = cores_in_mask(self.taskset) if self.taskset else None
        pin = f"taskset {shlex.quote(self.taskset)} " if self.taskset else ""
        targets = " ".join(f"cpu{c}" for c in cores) if cores else "cpu[0-9]*"
        command = (
            f"{pin}sh -c 'while :; do :; done' & busy=$!; sleep 0.3; cd /sys/devices/system/cpu && "
            f"for c in {targets}; do echo $c $(cat $c/cpufreq/scaling_cur_freq 2>/dev/null); done; "
            "kill $busy 2>/dev/null; true"
        )
        for attempt in range(FREQUENCY_CHECKS):
            freqs = {}
            for line in session.shell(command).splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    freqs[parts[0]] = int(parts[1])
            if not freqs:
                raise TargetUnavailableError(
                    "cannot read the CPU frequency (scaling_cur_freq) on the device; remove 'min_freq_khz' from the "
                    "device profile's settings to measure without the check"
                )
            best = max(freqs.values())
            if best >= self.min_freq_khz:
                return
            if attempt < FREQUENCY_CHECKS - 1:
                time.sleep(self.cooldown_s or 1.0)
        raise TargetUnavailableError(
            f"the phone's pinned cores reach only {best} kHz under load, below min_freq_khz {self.min_freq_khz} "
            "(thermal throttling or a power-saving mode): let it cool down, plug it in, then run the command again"
        )

    def _run_batch(
        self,
        labels: Sequence[str],
        paths: Sequence[str],
        uploads: Sequence[bytes],
        reference: Reference | None,
        rounds: int,
    ) -> list[LatencyStats]:
        """Push ``uploads`` to ``paths`` (already-pushed models pass none), time them in one script, parse."""
        ref_path = self._reference_path(reference.key) if reference is not None else None
        self._batches += 1
        script = batch_script(
            self.command, paths, ref_path, rounds, self.cooldown_s, remove_after=[*paths[: len(uploads)], SCRIPT]
        )

        def run(session: DeviceSession) -> str:
            self._ensure_ready(session)
            self._check_frequency(session)
            for data, path in zip(uploads, paths):
                session.push(data, f"{self.device_dir}/{path}")
            session.push(script.encode(), f"{self.device_dir}/{SCRIPT}")
            return session.shell(self._in_device_dir(f"sh {SCRIPT}"), long=True)

        what = f"measuring {len(paths)} model(s)" if len(paths) > 1 else f"measuring {labels[0]}"
        output = self.connection().call(run, what)
        results = parse_batch_output(output, labels, reference.key if reference is not None else None)
        baseline = reference.baseline_ms if reference is not None else None
        return [
            stats_from_rounds(rounds_, results.reference_rounds[i] if reference is not None else None, baseline)
            for i, rounds_ in enumerate(results.model_rounds)
        ]
