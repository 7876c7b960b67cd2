"""What ``ofa-deploy doctor --backend adb`` checks: everything a first profile of a phone needs.

In the order a first run meets them: the ``benchmark_model`` binary on this machine (configured,
present, built for which ABI), the host's adb server against the transport (a running server holds
the USB interface that adb-shell needs), then for every phone (``--serial``, else those the adb
server lists): authorized and answering, its ABI against the binary's, CPU governor and online
cores, and a trial run of ``benchmark_model`` on a one-operator model, which is what ``profile``
does first. Each failure carries the command that fixes it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from ofa_deploy.backend.artifact import ANDROID_ABI_MACHINES, elf_machine
from ofa_deploy.backend.diagnosis import Finding, Verdict, attempt
from ofa_deploy.backend.interface import overhead_graph
from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.adb.connection import list_adb_devices, parse_serial

ADB_SERVER_PORT = 5037
GET_BINARY = "export OFA_DEPLOY_BENCHMARK_MODEL=/path/to/benchmark_model  (prebuilt per ABI: docs/adb.md)"
ALLOW_KEY = "unlock the phone and tap 'Allow' on the 'Allow USB debugging?' prompt (key: {key}.pub)"


def adb_server_running(port: int = ADB_SERVER_PORT) -> bool:
    """Whether the host's adb server accepts connections (it then holds the phones' USB interfaces)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _abi_of(machine: int) -> str | None:
    return next((abi for abi, number in ANDROID_ABI_MACHINES.items() if number == machine), None)


def binary_findings(path: Path | None) -> tuple[list[Finding], int]:
    """The host binary that is pushed to every phone; with its ELF machine (-1: not ELF, or none)."""
    if path is None:
        return [Finding("benchmark_model", Verdict.FAIL, "no benchmark_model binary is configured", GET_BINARY)], -1
    if not path.is_file():
        return [Finding("benchmark_model", Verdict.FAIL, f"{path} does not exist", GET_BINARY)], -1
    with path.open("rb") as file:
        machine = elf_machine(file.read(20))
    if machine == -1:
        what = f"{path}: not an ELF executable (a script runs wherever its interpreter does)"
        return [Finding("benchmark_model", Verdict.INFO, what)], machine
    abi = _abi_of(machine)
    return [Finding("benchmark_model", Verdict.OK, f"{path}: built for {abi or f'ELF machine {machine}'}")], machine


def server_finding(serials: list[str], running: bool) -> Finding:
    """The host's adb server against the transports the phones use."""
    usb = [s for s in serials if parse_serial(s) is None]
    if not running:
        return Finding("adb server", Verdict.OK, "not running (adb-shell can claim USB phones itself)")
    if usb:
        return Finding(
            "adb server",
            Verdict.FAIL,
            f"running: it holds the USB interface of {', '.join(usb)}, which ofa-deploy talks to directly",
            "adb kill-server   (after `ofa-deploy devices` has listed the phones)",
        )
    return Finding("adb server", Verdict.OK, "running; not in the way of HOST:PORT serials")


def phone_findings(backend: Any, serial: str, state: str | None, machine: int) -> list[Finding]:
    """One phone: authorized and answering, ABI, governor, online cores, and a trial benchmark run;
    ``machine``: the ELF machine of the benchmark_model binary (-1: not ELF), from :func:`binary_findings`."""
    label = f"phone {serial}"
    key = backend.connection().settings.key_path
    if state == "unauthorized":
        return [Finding(label, Verdict.FAIL, "the adb server lists it as unauthorized", ALLOW_KEY.format(key=key))]
    if state not in (None, "device"):
        return [Finding(label, Verdict.FAIL, f"the adb server lists it as {state}", "reconnect it and unlock it")]
    fix = ALLOW_KEY.format(key=key) + "; for Wi-Fi: `adb tcpip 5555` over USB, then --serial PHONE_IP:5555"
    answer, failure = attempt(label, backend.check, fix)
    if failure is not None:
        return [failure]
    assert answer is not None
    abi = answer.get("abi") or ""
    named = " ".join(filter(None, [answer.get("manufacturer"), answer.get("model")])) or "answers"
    extra = ", ".join(filter(None, [abi, f"Android {answer['android']}" if answer.get("android") else ""]))
    findings = [Finding(label, Verdict.OK, f"{named} ({extra})" if extra else named)]
    if abi and machine != -1 and ANDROID_ABI_MACHINES.get(abi) not in (None, machine):
        findings.append(
            Finding(
                f"{label} ABI",
                Verdict.FAIL,
                f"the phone is {abi}, benchmark_model is built for {_abi_of(machine) or machine}",
                f"use the benchmark_model built for {abi} (docs/adb.md)",
            )
        )
    governor = answer.get("governor") or ""
    if governor and governor != "performance":
        findings.append(
            Finding(
                f"{label} governor",
                Verdict.WARN,
                f"{governor}: clocks follow the load, so figures vary more (the drift reference corrects slow drift)",
                f'adb -s {serial} shell "echo performance > /sys/devices/system/cpu/cpufreq/policy0/scaling_governor" '
                "(needs root)",
            )
        )
    online, failure = attempt(
        f"{label} cores", lambda: backend.connection().shell("cat /sys/devices/system/cpu/online", "reading the cores")
    )
    if online and online.strip():
        findings.append(Finding(f"{label} cores", Verdict.INFO, f"online: {online.strip()}"))
    if any(f.verdict is Verdict.FAIL for f in findings):
        return findings  # a binary for another ABI is not run
    backend.close()  # releases the phone's lock for the trial's own connection
    trial = backend.reconfigured(TimingOptions(backend.timing.threads, warmup=1, rounds=1, runs=1))
    with trial:
        stats, failure = attempt(f"{label} trial run", lambda: trial.measure_networks([overhead_graph()]))
    if failure is not None:
        return [*findings, failure]
    assert stats is not None
    done = f"benchmark_model ran a one-operator model: {stats[0].estimate:.3f} ms"
    return [*findings, Finding(f"{label} trial run", Verdict.OK, done)]


def diagnose(backend: Any, binary_path: Path | None) -> list[Finding]:
    """Every check above for ``backend`` (an AdbBackend) as configured (its ``--serial``, else every
    listed phone), with ``binary_path`` the host's benchmark_model it is configured with."""
    binary, machine = binary_findings(binary_path)
    listed = {d["serial"]: d["state"] for d in list_adb_devices()}
    serials = [backend.serial] if backend.serial else list(listed)
    findings = [*binary, server_finding(serials, adb_server_running())]
    if not serials:
        none = "no phone: the adb server lists none and no --serial was given"
        fix = "connect a phone by USB with USB debugging on, or give --serial PHONE_IP:5555 (after `adb tcpip 5555`)"
        return [*findings, Finding("phone", Verdict.FAIL, none, fix)]
    if any(f.verdict is Verdict.FAIL and f.check == "benchmark_model" for f in binary):
        return findings  # every phone check would stop at the missing binary
    for serial in serials:
        with backend.reconfigured(serial=serial) as phone:
            findings += phone_findings(phone, serial, listed.get(serial), machine)
    return findings
