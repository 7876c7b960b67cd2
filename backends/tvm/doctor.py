"""What ``ofa-deploy doctor --backend tvm`` checks: the linker for the board's libraries, then the
way to the board: the tracker answers, servers are registered under the key, and a session opens.

Opening a session is TVM's RPC handshake, which refuses a board whose runtime speaks another RPC
protocol than the ``apache-tvm`` here; a library built by this TVM version needs the same version
of the runtime on the board (docs/tvm.md, "On the board"), which is what the session then loads.
"""

from __future__ import annotations

from typing import Any

from ofa_deploy.backend.diagnosis import Finding, Verdict, attempt
from ofa_deploy.backends.tvm.cross import linker_command
from ofa_deploy.backends.tvm.rpc import DeviceSession, registered_servers

START_SERVER = (
    "on the board: python -m tvm.exec.rpc_server --tracker {tracker} --key {key} --port 9090 --port-end 9190 "
    "(docs/tvm.md)"
)


def linker_finding(backend: Any) -> Finding:
    """The toolchain that links the libraries (a cross-compiler for a board)."""
    command, failure = attempt("linker", lambda: linker_command(backend.settings.cross_compiler, backend.spec.triple))
    if failure is not None:
        return failure
    assert command is not None
    where = f"for {backend.spec.triple}" if backend.spec.triple else "for this machine"
    return Finding("linker", Verdict.OK, f"{' '.join(command[:4])} links {where}")


def board_findings(backend: Any) -> list[Finding]:
    """The tracker (or server) and one session on the board."""
    connection = backend.connection
    if not connection.remote:
        if backend.settings.needs_device:
            fix = "give --rpc-tracker HOST:PORT --rpc-key KEY (or --rpc HOST:PORT); `compile` needs no board"
            return [Finding("board", Verdict.FAIL, f"target {backend.spec.target} runs on a board", fix)]
        return [Finding("board", Verdict.INFO, "none: builds and times on this machine's CPU, in-process")]
    findings = []
    if connection.tracker is not None:
        key = str(connection.key)
        start = START_SERVER.format(tracker=connection.tracker, key=key)

        count, failure = attempt(
            "tracker",
            lambda: registered_servers(connection.tracker, key, min(connection.timeout_s, 5.0)),
            f"python -m tvm.exec.rpc_tracker --port {connection.tracker.port}",
        )
        if failure is not None:
            return [failure]
        if not count:
            return [
                Finding("tracker", Verdict.FAIL, f"{connection.tracker}: no server registered under '{key}'", start)
            ]
        findings.append(Finding("tracker", Verdict.OK, f"{connection.tracker}: {count} server(s) under '{key}'"))
    session, failure = attempt(
        "board session",
        lambda: DeviceSession(connection, backend.spec.device_type, backend.timing.threads),
        "match the board's TVM runtime to this apache-tvm version (docs/tvm.md, 'On the board')",
    )
    if failure is not None:
        return [*findings, failure]
    assert session is not None
    session.close()
    version = backend.runtime_info()["runtime_version"]
    said = f"{connection.describe()}: a session opened (the RPC handshake matched apache-tvm {version} here)"
    return [*findings, Finding("board session", Verdict.OK, said)]


def diagnose(backend: Any) -> list[Finding]:
    """Linker, then board."""
    return [linker_finding(backend), *board_findings(backend)]
