"""Android phone CPU over ADB: TFLite ``benchmark_model`` run on the device, driven by adb-shell.

The toolkit pushes the user's ``benchmark_model`` binary and one ``.tflite`` per operator to a
device directory, and times a whole batch of models per round trip (one shell script, each model
followed by the reference operator, so entries are normalised exactly like on the host; see
:mod:`ofa_deploy.backend.interface`). Setup, settings and what was tested: docs/adb.md.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
import weakref
from collections.abc import Callable, Sequence
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ofa_deploy.backend.interface import Artifact, Backend, LatencyStats, Reference, TimingOptions, require_module
from ofa_deploy.backends.adb_batch import BenchmarkCommand, batch_script, parse_batch_output, stats_from_rounds
from ofa_deploy.backends.adb_connection import (
    AdbConnection,
    ConnectionSettings,
    DeviceSession,
    config_dir,
    list_adb_devices,
)
from ofa_deploy.backends.benchmark_model_output import (
    BenchmarkBinaryMissingError,
    BenchmarkFailedError,
    BenchmarkResult,
    parse_benchmark_output,
)
from ofa_deploy.backends.tflite import TFLiteBackend, tflite_artifact
from ofa_deploy.deploy.graph.ir import Graph, build_graph
from ofa_deploy.deploy.graph.tflite_writer import to_tflite_bytes
from ofa_deploy.errors import BadInputError, TargetUnavailableError
from ofa_deploy.space.ops import OpSpec

__all__ = [
    "AdbBackend",
    "BenchmarkBinaryMissingError",
    "BenchmarkFailedError",
    "BenchmarkResult",
    "list_adb_devices",
    "parse_benchmark_output",
]

DEFAULT_DEVICE_DIR = "/data/local/tmp/ofa-deploy"
BINARY_ENV = "OFA_DEPLOY_BENCHMARK_MODEL"
SERIAL_ENV = "ANDROID_SERIAL"  # the variable adb itself reads
FREQUENCY_CHECKS = 3
BINARY, MODELS, SCRIPT = "benchmark_model", "models", "batch.sh"  # inside the device directory

_SETTINGS = {
    "serial": "host:port for ADB over TCP/Wi-Fi, or a USB serial (default: $ANDROID_SERIAL, else the only USB device)",
    "benchmark_model": f"host path of the Android benchmark_model binary to push (default: ${BINARY_ENV})",
    "device_dir": f"device directory for the binary and models (default {DEFAULT_DEVICE_DIR})",
    "taskset": "hex CPU mask benchmark_model is pinned to, e.g. 'f0' for cores 4-7 (default: no pinning)",
    "xnnpack": "use the XNNPACK delegate (default true)",
    "cooldown_s": "seconds to sleep between timing rounds on the phone (default 0)",
    "min_freq_khz": "before each batch, the pinned cores must reach this frequency under load (default 0: no check)",
    "batch_size": "models timed per round trip (default 32)",
    "retries": "reconnection attempts after a dropped connection (default 3)",
    "retry_delay_s": "first back-off delay in seconds, doubled after each try (default 1)",
    "connect_timeout_s": "timeout for connecting and for short requests (default 10)",
    "command_timeout_s": "longest silence allowed while a batch runs on the phone (default 600)",
    "auth_timeout_s": "time to accept the 'Allow USB debugging?' prompt (default 30)",
    "key_path": "RSA key for ADB authentication (default: ~/.config/ofa-deploy/adbkey, created once)",
    "cleanup": "remove the pushed binary and models from the device when done (default true)",
}


def _positive(settings: dict[str, Any], name: str, default: float, cast: type = float) -> Any:
    value = settings.get(name, default)
    try:
        value = cast(value)
    except (TypeError, ValueError):
        raise BadInputError(f"adb setting '{name}' must be a number, got {value!r}") from None
    if value < 0 or (cast is int and name == "batch_size" and value < 1):
        raise BadInputError(f"adb setting '{name}' must be {'positive' if name == 'batch_size' else '>= 0'}")
    return value


def cores_in_mask(mask: str) -> list[int]:
    """CPU numbers in a hex taskset mask ("f0" -> [4, 5, 6, 7])."""
    try:
        bits = int(mask, 16)
    except ValueError:
        raise BadInputError(f"adb setting 'taskset': '{mask}' is not a hex CPU mask such as 'f0'") from None
    if bits <= 0:
        raise BadInputError(f"adb setting 'taskset': '{mask}' selects no CPU")
    return [i for i in range(bits.bit_length()) if bits >> i & 1]


def _cleanup_device(connection: AdbConnection, directory: str, enabled: bool) -> None:
    """Remove what this backend put on the phone (only its own files), then hang up."""
    if enabled:
        files = shlex.join([f"{directory}/{BINARY}", f"{directory}/{SCRIPT}"])
        command = (
            f"rm -rf {shlex.quote(f'{directory}/{MODELS}')}; rm -f {files}; rmdir {shlex.quote(directory)} 2>/dev/null;"
            " true"
        )
        connection.if_connected(lambda session: session.shell(command))
    connection.close()


class AdbBackend(Backend):
    name = "adb"
    extra = "adb"
    description = "Android phone CPU over ADB, TFLite benchmark_model"
    artifact_suffix = ".tflite"
    batch_size: ClassVar[int] = 32
    times_on_host = False  # the phone measures: this machine's load does not bias the figures

    @classmethod
    def settings_schema(cls) -> dict[str, str]:
        return dict(_SETTINGS)

    def __init__(self, timing: TimingOptions | None = None, **settings: Any) -> None:
        super().__init__(timing, **settings)
        self.batch_size = _positive(settings, "batch_size", type(self).batch_size, int)
        self.cooldown_s = _positive(settings, "cooldown_s", 0.0)
        self.min_freq_khz = _positive(settings, "min_freq_khz", 0, int)
        taskset = settings.get("taskset")
        self.taskset = str(taskset).lower().removeprefix("0x") if taskset not in (None, "", False) else None
        if self.taskset:
            cores_in_mask(self.taskset)
        self.device_dir = str(settings.get("device_dir") or DEFAULT_DEVICE_DIR).rstrip("/")
        if not self.device_dir.startswith("/"):
            raise BadInputError(f"adb setting 'device_dir' must be an absolute device path, got {self.device_dir!r}")
        self.serial = settings.get("serial") or os.environ.get(SERIAL_ENV) or None
        self.serial = str(self.serial) if self.serial is not None else None
        self._connection: AdbConnection | None = None
        self._ready = False
        self._references: dict[str, str] = {}  # reference key -> device path
        self._batches = 0

    # ------------------------------------------------------------------ configuration
    @property
    def binary_path(self) -> Path:
        value = self.settings.get("benchmark_model") or os.environ.get(BINARY_ENV)
        if not value:
            raise TargetUnavailableError(
                "the adb backend needs the Android benchmark_model binary: set 'benchmark_model' in the device "
                f"profile's settings or ${BINARY_ENV} (where to get it: docs/adb.md)"
            )
        path = Path(os.path.expanduser(str(value)))
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
        return BenchmarkCommand(f"./{BINARY}", self.timing, bool(self.settings.get("xnnpack", True)), self.taskset)

    def connection(self) -> AdbConnection:
        """The device connection, opened on first use; the phone is cleaned up when the backend goes."""
        if self._connection is None:
            require_module(self.name, self.extra, "adb_shell", "adb-shell")
            key = self.settings.get("key_path")
            self._connection = AdbConnection(
                ConnectionSettings(
                    serial=self.serial,
                    key_path=Path(os.path.expanduser(str(key))) if key else config_dir() / "adbkey",
                    transport_timeout_s=_positive(self.settings, "connect_timeout_s", 10.0),
                    command_timeout_s=_positive(self.settings, "command_timeout_s", 600.0),
                    auth_timeout_s=_positive(self.settings, "auth_timeout_s", 30.0),
                    retries=_positive(self.settings, "retries", 3, int),
                    retry_delay_s=_positive(self.settings, "retry_delay_s", 1.0),
                )
            )
            self._finalizer = weakref.finalize(
                self,
                _cleanup_device,
                self._connection,
                self.device_dir,
                bool(self.settings.get("cleanup", True)),
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
        binary = self.settings.get("benchmark_model") or os.environ.get(BINARY_ENV)
        if binary and Path(os.path.expanduser(str(binary))).is_file():
            info["runtime_version"] += f", benchmark_model sha256:{self._binary_digest}"
        return info

    @cached_property
    def _binary_digest(self) -> str:
        return hashlib.sha256(self.binary_path.read_bytes()).hexdigest()[:12]

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
        return {
            **info,
            "serial": self.serial or "usb",
            **device,
            "taskset": self.taskset or "",
            "xnnpack": self.command.xnnpack,
        }

    def load(self, graph: Graph) -> Callable[[], Any]:
        """Push ``graph`` and return a callable that runs it once on the phone (timing goes through
        :meth:`measure`, which batches; this is for checks)."""
        path = f"{MODELS}/load-{hashlib.sha1(repr(graph).encode()).hexdigest()[:12]}.tflite"
        data = to_tflite_bytes(graph)
        self.connection().call(lambda session: self._push_model(session, data, path), f"pushing {path}")
        return lambda: self._run_once(path)

    def measure(self, ops: Sequence[OpSpec], reference: Reference | None = None) -> dict[str, LatencyStats]:
        """Latency of each operator, measured in batches of models per ADB round trip."""
        models = [(op.key, to_tflite_bytes(build_graph([op]))) for op in ops]
        return dict(zip([op.key for op in ops], self._measure_models(models, reference)))

    def measure_graph(self, graph: Graph, reference: Reference | None = None) -> LatencyStats:
        return self._measure_models([("the sub-network", to_tflite_bytes(graph))], reference)[0]

    def reference(self, key: str, baseline_ms: float | None = None) -> Reference:
        """Push the reference operator; without a baseline, time it alone now (at profiling time)."""
        self._reference_path(key)
        if baseline_ms is None:
            rounds = max(self.timing.rounds, 9)
            path = self._references[key]
            baseline_ms = self._run_batch([key], [path], [], None, rounds)[0].raw_estimate
        return Reference(key, lambda: self._run_once(self._reference_path(key)), baseline_ms)

    def export(self, graph: Graph, directory: Path) -> Artifact:
        return tflite_artifact(graph, directory)

    def load_artifact(self, directory: Path, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray]:
        """Run the artifact with the host's LiteRT interpreter: the same .tflite file the phone runs,
        for numerical checks (the phone's benchmark_model does not return outputs)."""
        host = TFLiteBackend(self.timing, xnnpack=bool(self.settings.get("xnnpack", True)))
        return host.load_artifact(directory, artifact)

    def benchmark(self, directory: Path, artifact: Artifact, reference: Reference | None = None) -> LatencyStats:
        """Time the compiled .tflite on the phone with the same protocol as the latency table."""
        local = Path(directory) / artifact.main
        if not local.is_file():
            raise BadInputError(f"{local}: the artifact's model file is missing")
        return self._measure_models([(str(local), local.read_bytes())], reference, names=[local.name])[0]

    # ------------------------------------------------------------------ device work
    def _ensure_ready(self, session: DeviceSession) -> None:
        """Create the device directory and install benchmark_model (again only if it changed)."""
        if self._ready:
            return
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
            data = to_tflite_bytes(build_graph([OpSpec.from_key(key)]))
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

    def _measure_models(
        self, models: Sequence[tuple[str, bytes]], reference: Reference | None, names: Sequence[str] | None = None
    ) -> list[LatencyStats]:
        stats: list[LatencyStats] = []
        step = max(1, self.batch_size)
        for start in range(0, len(models), step):
            chunk = models[start : start + step]
            chunk_names = names[start : start + step] if names else None
            paths = [
                f"{MODELS}/"
                + (chunk_names[i] if chunk_names else f"m{start + i}-{hashlib.sha1(data).hexdigest()[:12]}.tflite")
                for i, (_, data) in enumerate(chunk)
            ]
            stats += self._run_batch(
                [label for label, _ in chunk], paths, [data for _, data in chunk], reference, self.timing.rounds
            )
        return stats

    def _run_once(self, path: str) -> BenchmarkResult:
        """One inference of an already pushed model (what :meth:`load`'s callable does)."""
        argv = self.command.argv(path, runs=1)
        output = self.connection().shell(self._in_device_dir(f"{shlex.join(argv)} 2>&1"), f"running {path}")
        return parse_benchmark_output(output, model=path)
