"""Issue 23, inputs and peers: each attack reproduced through the CLI, ending safely.

The TVM tracker client under a hostile tracker (trickled, huge, malformed replies), ``fit`` on a
file of repeated networks, the ONNX reader on external data / many custom ops / absurd sizes, the
output lock shared by every verb that writes a LUT, input files that are not regular files or are
too large, strict JSON, a relative ``--remote-dir`` and control characters on the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.latency.measurements import Measurement, write_measurements
from ofa_deploy.space.arch import sample_batch

FPGA = ["--device", "dpu-b4096"]


def one_line(capsys) -> str:
    """The only error line on stderr (no traceback), after any progress notes."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def strict_load(path: Path):
    """JSON that refuses NaN and Infinity, as a strict parser would."""

    def refuse(name: str):
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def fpga_lut(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lut") / "lut.json"
    assert main(["profile", *FPGA, "--resolutions", "160", "--out", str(out), "--no-progress"]) == 0
    return out


@contextlib.contextmanager
def lock_held_elsewhere(path: Path):
    """Another process holds the output lock of ``path`` (as a running profile does)."""
    script = f"from ofa_deploy.files import output_lock\nwith output_lock({str(path)!r}):"
    script += " print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------- item 4: the TVM tracker client


class HostileTracker:
    """A loopback TCP peer that does the tracker handshake, then answers each request with ``reply(code)``:
    the raw bytes to send, or a list of (bytes, delay) pieces to trickle."""

    MAGIC = 0x2F271

    def __init__(self, reply) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            if len(conn.recv(4)) < 4:  # probe() connects and hangs up
                return
            conn.sendall(struct.pack("<i", self.MAGIC))
            while not self.stopped.is_set():
                header = conn.recv(4)
                if len(header) < 4:
                    return
                size = struct.unpack("<i", header)[0]
                code = json.loads(conn.recv(size))[0]
                pieces = self.reply(code)
                for data, delay in pieces if isinstance(pieces, list) else [(pieces, 0.0)]:
                    if self.stopped.wait(delay):
                        return
                    conn.sendall(data)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def framed(value, padding: int = 0) -> bytes:
    body = (json.dumps(value) + " " * padding).encode()
    return struct.pack("<i", len(body)) + body


SUMMARY_OK = framed([0, {"server_info": [{"key": "server:jetson", "addr": ["127.0.0.1", 1]}], "queue_info": {}}])


def trickled(code):  # one byte every 0.4 s: each recv returns in time, a reply takes a minute
    body = framed([0, ["127.0.0.1", 9, "jetson"]] if code == 4 else [0, {"server_info": []}], padding=150)
    return [(body[i : i + 1], 0.4) for i in range(len(body))]


HOSTILE = {
    "trickle": (trickled, "within 2 s"),
    "huge": (lambda code: struct.pack("<i", 2**31 - 1), "the limit is 1048576"),
    "not-json": (lambda code: struct.pack("<i", 5) + b"{nope", "not JSON"),
    "summary-shape": (lambda code: framed([0, ["a", "list"]]), "malformed reply to SUMMARY"),
    "request-shape": (
        lambda code: SUMMARY_OK if code == 6 else framed([0, ["127.0.0.1", "9190", "jetson"]]),
        "is not a TCP port",
    ),
    "code-only": (lambda code: framed([0]), "malformed reply"),
}


@pytest.mark.serial  # a bound on wall time: run without the other serial tests
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tracker_is_exit_3_in_one_line_within_the_deadline(case, tmp_path, capsys):
    pytest.importorskip("tvm", reason="the tvm extra is not installed")
    reply, says = HOSTILE[case]
    tracker = HostileTracker(reply)
    try:
        started = time.monotonic()
        args = ["profile", "--backend", "tvm", "--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", "jetson"]
        code = main([*args, "--rpc-timeout", "2", "--resolutions", "160", "--out", str(tmp_path / "t.json")])
        elapsed = time.monotonic() - started
    finally:
        tracker.close()
    line = one_line(capsys)
    assert code == 3 and says in line, line
    assert elapsed < 30  # one deadline per request (a per-recv one let a trickle run for minutes)
    assert not (tmp_path / "t.json").exists()


# ---------------------------------------------------------------------- item 5: fit and repeated networks


def test_fit_on_a_repeated_file_reports_the_held_out_error_of_the_distinct_networks(tmp_path, capsys):
    batch = sample_batch(np.random.default_rng(5), 40, resolutions=(160, 192, 224))
    noise = np.random.default_rng(6).uniform(5.0, 15.0, 40)  # pure noise: nothing to learn
    once = [Measurement(a, float(y)) for a, y in zip(batch.to_archs(), noise)]
    summaries = {}
    for name, lines in (("once", once), ("repeated", once * 5)):
        write_measurements(tmp_path / f"{name}.jsonl", lines)
        out = tmp_path / f"{name}.json"
        assert main(["fit", "--measurements", str(tmp_path / f"{name}.jsonl"), "--out", str(out), "--json"]) == 0
        summaries[name] = json.loads(capsys.readouterr().out)
        assert strict_load(out)["metadata"]["fit"]["held_out"] == summaries[name]["held_out"]
    once_acc, repeated_acc = summaries["once"]["held_out"]["acc10"], summaries["repeated"]["held_out"]["acc10"]
    assert repeated_acc == pytest.approx(once_acc) and repeated_acc < 0.6, (once_acc, repeated_acc)
    assert summaries["repeated"]["measurements"] == 200 and summaries["repeated"]["networks"] == 40


def test_fit_never_writes_nan(tmp_path, capsys):
    """Equal latencies everywhere: a Kendall tau is undefined; the LUT holds null, strict JSON."""
    batch = sample_batch(np.random.default_rng(8), 12, resolutions=(160,))
    write_measurements(tmp_path / "m.jsonl", [Measurement(a, 5.0) for a in batch.to_archs()])
    assert main(["fit", "--measurements", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "t.json")]) == 0
    held = strict_load(tmp_path / "t.json")["metadata"]["fit"]["held_out"]
    assert held["kendall_tau"] is None and "n/a" in capsys.readouterr().out


# ---------------------------------------------------------------------- item 7: the ONNX reader (estimate)


def _onnx_model(nodes, inputs=None, opsets=(("", 17),)):
    from onnx import TensorProto, helper

    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])]
    out = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [None] * 4)
    graph = helper.make_graph(nodes, "g", inputs, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _external(name: str, location: str):
    from onnx import TensorProto, numpy_helper

    tensor = numpy_helper.from_array(np.zeros((1,), np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def test_estimate_never_reads_external_data(tmp_path):
    """A Constant whose data is 'in' a FIFO of the current directory: reading it would hang."""
    from onnx import helper

    pytest.importorskip("onnx")
    os.mkfifo(tmp_path / "secret.bin")
    nodes = [
        helper.make_node("Constant", [], ["six"], value=_external("six", "secret.bin")),
        helper.make_node("Clip", ["x", "", "six"], ["y"]),
    ]
    (tmp_path / "m.onnx").write_bytes(_onnx_model(nodes).SerializeToString())
    cli = [sys.executable, "-m", "ofa_deploy", "estimate", "--backend", "fpga", *FPGA, "--model", "m.onnx", "--json"]
    done = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layers"][0]["source_op"] == "Clip"


def test_other_external_tensors_are_refused(tmp_path, capsys):
    from onnx import helper

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["c"], value=_external("fill", "/etc/hostname")),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    (tmp_path / "m.onnx").write_bytes(_onnx_model(nodes).SerializeToString())
    assert main(["estimate", "--backend", "fpga", *FPGA, "--model", str(tmp_path / "m.onnx")]) == 2
    assert "never reads external data" in one_line(capsys)


@pytest.mark.serial  # a bound on wall time: run without the other serial tests
def test_thousands_of_custom_ops_are_read_in_linear_time(tmp_path, capsys):
    from onnx import helper

    nodes, previous = [], "x"
    for i in range(3200):  # custom ops (their shape is assumed), each followed by an op ONNX infers
        nodes.append(helper.make_node("MyOp", [previous], [f"c{i}"], domain="custom.ops"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous = f"r{i}"
    (tmp_path / "m.onnx").write_bytes(_onnx_model(nodes, opsets=(("", 17), ("custom.ops", 1))).SerializeToString())
    started = time.monotonic()
    assert main(["estimate", "--backend", "fpga", *FPGA, "--model", str(tmp_path / "m.onnx"), "--json"]) == 0
    assert time.monotonic() - started < 30  # quadratic inference took minutes
    assert len(json.loads(capsys.readouterr().out)["layers"]) == 6400


@pytest.mark.parametrize("dims", [[1, 3, 10**9, 10**9], [1, 2**21, 2, 2], [1, 4096, 4096, 4096]])
def test_absurd_dimensions_are_exit_2(dims, tmp_path, capsys):
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    model = _onnx_model([helper.make_node("Relu", ["x"], ["y"])], inputs=inputs)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    assert main(["estimate", "--backend", "fpga", *FPGA, "--model", str(tmp_path / "m.onnx")]) == 2
    assert "is not a model this reader estimates" in one_line(capsys)


def test_absurd_kernel_is_exit_2(tmp_path, capsys):
    from onnx import helper

    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1], strides=[10**6, 10**6])
    (tmp_path / "m.onnx").write_bytes(_onnx_model([pool]).SerializeToString())
    assert main(["estimate", "--backend", "fpga", *FPGA, "--model", str(tmp_path / "m.onnx")]) == 2
    assert "too large" in one_line(capsys)


# ---------------------------------------------------------------------- item 9: one output lock for every LUT writer


def test_validate_and_fit_refuse_a_lut_that_profile_is_writing(fpga_lut, tmp_path, capsys):
    lut = tmp_path / "lut.json"
    lut.write_bytes(fpga_lut.read_bytes())
    batch = sample_batch(np.random.default_rng(3), 8, resolutions=(160,))
    write_measurements(tmp_path / "m.jsonl", [Measurement(a, 3.0 + i) for i, a in enumerate(batch.to_archs())])
    before = lut.read_bytes()
    with lock_held_elsewhere(lut) as holder:
        validate = ["validate", "--lut", str(lut), "--backend", "fpga", "--samples", "5", "--out", str(tmp_path / "v")]
        assert main([*validate, "--no-progress"]) == 2
        assert f"being written by another ofa-deploy run (pid {holder.pid})" in one_line(capsys)
        assert main(["fit", "--measurements", str(tmp_path / "m.jsonl"), "--out", str(lut)]) == 2
        assert "being written by another ofa-deploy run" in one_line(capsys)
        assert main(["profile", *FPGA, "--resolutions", "160", "--out", str(lut), "--resume"]) == 2
        assert "being written" in one_line(capsys)
    assert lut.read_bytes() == before and not (tmp_path / "v").exists()
    assert main(["fit", "--measurements", str(tmp_path / "m.jsonl"), "--out", str(lut)]) == 0  # holder killed
    assert not (tmp_path / "lut.json.lock").exists()


def test_a_lock_taken_on_a_file_its_holder_just_removed_is_taken_again(tmp_path, monkeypatch):
    """Run B opens PATH.lock just before run A, finishing, removes it and lets go; B then locks a file
    no one else will open, while run C creates a new PATH.lock and locks that: B must not go on."""
    from ofa_deploy import files
    from ofa_deploy.errors import OFADeployError

    out = tmp_path / "lut.json"
    lock_path = tmp_path / "lut.json.lock"
    record, others = files._record_holder, []

    def removed_then_taken_by_another_run(fd: int) -> None:
        record(fd)  # B's pid, in the file it locked
        if not others:
            lock_path.unlink()  # A's clean-up came in between: B's file is gone from the folder
            others.append(lock_held_elsewhere(out))
            others.append(others[0].__enter__())  # C holds a new PATH.lock

    monkeypatch.setattr(files, "_record_holder", removed_then_taken_by_another_run)
    try:
        with pytest.raises(OFADeployError) as refused, files.output_lock(out):
            pytest.fail("two runs hold the output lock of the same file")
        holder = others[1]
        assert f"being written by another ofa-deploy run (pid {holder.pid})" in str(refused.value)
        assert holder.poll() is None and lock_path.read_text().split() == [str(holder.pid)]  # C's lock is intact
    finally:
        if others:
            others[0].__exit__(None, None, None)


def test_the_lock_is_filelock_and_a_declared_dependency():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.replace(" ", "").startswith("filelock") for d in project["dependencies"])


# ---------------------------------------------------------------------- item 10: input files


def _inputs(tmp_path, fpga_lut, special: str) -> list[list[str]]:
    return [
        ["predict", "--lut", str(fpga_lut), "--archs", special],
        ["predict", "--lut", str(fpga_lut), "--arch", special],
        ["predict", "--lut", special, "--arch", str(tmp_path / "a.json")],
        ["fit", "--measurements", special, "--out", str(tmp_path / "fit.json")],
        ["info", "--arch", special],
        ["estimate", "--backend", "fpga", *FPGA, "--model", special],
    ]


def test_a_fifo_or_a_device_as_an_input_is_exit_2_at_once(fpga_lut, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for special, kind in ((str(fifo), "a FIFO"), ("/dev/zero", "a character device")):
        for argv in _inputs(tmp_path, fpga_lut, special):
            started = time.monotonic()
            assert main(argv) == 2, argv
            line = one_line(capsys)
            assert special in line and f"it is {kind}, not a regular file" in line, line
            assert time.monotonic() - started < 30
    assert not (tmp_path / "fit.json").exists()


def test_too_large_inputs_are_exit_2_without_reading_them(fpga_lut, tmp_path, capsys):
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:  # sparse: 300 MiB that take no disk and must not be read
        f.truncate(300 << 20)
    for argv in _inputs(tmp_path, fpga_lut, str(big))[:5]:
        assert main(argv) == 2, argv
        assert "too large" in one_line(capsys)


def test_archs_files_are_streamed_with_a_line_limit(fpga_lut, tmp_path, capsys):
    archs = tmp_path / "a.jsonl"
    line = json.dumps(sample_batch(np.random.default_rng(1), 1, resolutions=(160,)).to_archs()[0].to_dict())
    archs.write_text(f"{line}\n{line}\n" + '{"pad": "' + "x" * 100_000 + '"}\n')
    assert main(["predict", "--lut", str(fpga_lut), "--archs", str(archs)]) == 2
    assert f"{archs}:3: line longer than" in one_line(capsys)
    archs.write_text(f"{line}\n" * 1000)
    assert main(["predict", "--lut", str(fpga_lut), "--archs", str(archs), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1000


# ---------------------------------------------------------------------- item 11: --remote-dir, the terminal


def test_a_relative_remote_dir_is_exit_2(tmp_path, capsys):
    for remote in ("ofa", "./ofa", "../tmp"):
        assert main(["deploy", str(tmp_path / "bundle"), "--backend", "adb", "--remote-dir", remote]) == 2
        line = one_line(capsys)
        assert "--remote-dir" in line and "absolute path" in line, line


def test_control_characters_never_reach_the_terminal(tmp_path, capsys):
    hostile = tmp_path / "a\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eb.json"
    assert main(["info", "--arch", str(hostile)]) == 2
    err = capsys.readouterr().err
    assert not any(c in err for c in "\x1b\x07\x9b\u202e") and "\\x1b]0;pwned\\x07" in err and "\\u202e" in err
