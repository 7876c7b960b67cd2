"""``ofa-deploy info`` and the CLI's error conventions (one line on stderr, exit codes)."""

import json
import subprocess
import sys

import pytest
import torch

from ofa_deploy.cli.main import main
from ofa_deploy.nn.supernet import OFAMobileNetV3

TUTORIAL = {
    "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
    "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
    "d": [2, 2, 3, 4, 3],
    "r": 192,
}


def write(tmp_path, data, name="arch.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_info_json(tmp_path, capsys):
    assert main(["info", "--arch", write(tmp_path, TUTORIAL), "--width-mult", "1.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["width_mult"] == 1.2 and doc["resolution"] == 192
    assert doc["params"] == 7_711_880
    assert len(doc["stages"]) == 5 and doc["stages"][3]["depth"] == 4
    assert doc["peak_memory_bytes"] > 0 and doc["flops_m"] == pytest.approx(doc["macs"] / 1e6)


def test_info_table(tmp_path, capsys):
    assert main(["info", "--arch", write(tmp_path, {**TUTORIAL, "width_mult": 1.2})]) == 0
    out = capsys.readouterr().out
    assert "width mult  1.2" in out and "k7e6 k7e3 k3e4" in out and "MFLOPs" in out


def bad_cases():
    base = dict(TUTORIAL)
    yield "ks-length", {**base, "ks": [3] * 19}, "'ks' must have 20 entries"
    yield "ks-value", {**base, "ks": [4] * 20}, "'ks' entry 0 is 4"
    yield "ks-type", {**base, "ks": ["3"] * 20}, "'ks' entry 0 must be an integer"
    yield "e-length", {**base, "e": [3] * 5}, "'e' must have 20 entries"
    yield "e-value", {**base, "e": [3] * 19 + [8]}, "'e' entry 19 is 8"
    yield "e-type", {**base, "e": 3}, "'e' must be a list"
    yield "d-length", {**base, "d": [2] * 6}, "'d' must have 5 entries"
    yield "d-value", {**base, "d": [1, 2, 2, 2, 2]}, "'d' entry 0 is 1"
    yield "d-type", {**base, "d": [2.5] * 5}, "'d' entry 0 must be an integer"
    yield "r-value", {**base, "r": 100}, "'r' is 100"
    yield "r-type", {**base, "r": None}, "'r' must be an integer"
    yield "missing-ks", {k: v for k, v in base.items() if k != "ks"}, "'ks' is missing"
    yield "missing-e", {k: v for k, v in base.items() if k != "e"}, "'e' is missing"
    yield "missing-d", {k: v for k, v in base.items() if k != "d"}, "'d' is missing"
    yield "missing-r", {k: v for k, v in base.items() if k != "r"}, "'r' is missing"
    yield "not-json", "{'ks': oops", "not valid JSON"
    yield "not-object", "[]", "must be a JSON object"
    yield "width-mult", {**base, "width_mult": 0.75}, "width multiplier 0.75 is not one of"


@pytest.mark.parametrize(("case", "data", "words"), list(bad_cases()), ids=[c[0] for c in bad_cases()])
def test_invalid_arch_exits_2_with_one_line(tmp_path, capsys, case, data, words):
    assert main(["info", "--arch", write(tmp_path, data)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert words in lines[0] and "arch.json" in lines[0]


def test_unreadable_file_exits_2(tmp_path, capsys):
    assert main(["info", "--arch", str(tmp_path / "nope.json")]) == 2
    assert "no such arch file" in capsys.readouterr().err
    assert main(["info", "--arch", str(tmp_path)]) == 2  # a directory
    assert "cannot read" in capsys.readouterr().err


def test_verbose_shows_traceback(tmp_path, capsys):
    assert main(["-v", "info", "--arch", write(tmp_path, {**TUTORIAL, "r": 1})]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_extract_with_mismatched_checkpoint_exits_2(tmp_path, capsys):
    state = OFAMobileNetV3().state_dict()
    del state["classifier.linear.bias"]
    ckpt = tmp_path / "bad.pth"
    torch.save(state, ckpt)
    code = main(["extract", "--arch", write(tmp_path, TUTORIAL), "--supernet", str(ckpt), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifier.linear.bias" in err[0] and "missing" in err[0]


def test_extract_writes_loadable_subnet(tmp_path, capsys):
    torch.manual_seed(0)
    supernet = OFAMobileNetV3(width_mult=1.2)
    ckpt = tmp_path / "w12.pth"
    torch.save({"state_dict": supernet.state_dict()}, ckpt)
    out = tmp_path / "sub"
    assert (
        main(["extract", "--arch", write(tmp_path, TUTORIAL), "--supernet", str(ckpt), "--out", str(out), "--json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["width_mult"] == 1.2 and doc["weights"] == "checkpoint" and doc["params"] == 7_711_880
    from ofa_deploy.nn.mobilenet_v3 import build_from_net_config

    net = build_from_net_config(out / "net.config")
    net.load_state_dict(torch.load(out / "weights.pth", weights_only=True))


def test_console_script_runs():
    """The installed entry point, as a user calls it."""
    result = subprocess.run([sys.executable, "-m", "ofa_deploy.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "info" in result.stdout


def test_global_flags_work_before_or_after_every_verb(tmp_path, capsys):
    import argparse

    from ofa_deploy.cli.main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, verb in verbs.items():
        assert {"-v", "--verbose", "-q", "--quiet"} <= set(verb._option_string_actions), name
    assert parser.parse_args(["info", "--arch", "a.json"]).verbose is False
    assert parser.parse_args(["-v", "info", "--arch", "a.json"]).verbose is True  # not reset by the verb
    assert parser.parse_args(["info", "--arch", "a.json", "-v"]).verbose is True
    assert parser.parse_args(["info", "--arch", "a.json", "--quiet"]).quiet is True
    code = main(["info", "--arch", str(tmp_path / "missing.json"), "-v"])
    assert code == 2 and "Traceback" in capsys.readouterr().err  # -v after the verb: the traceback is shown


def test_quiet_hides_progress_bars_on_a_terminal(tmp_path, monkeypatch):
    """-q (before or after the verb): warnings and errors only, so no progress bar either."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def stderr_of(before: list[str], after: list[str]) -> str:
        monkeypatch.setattr(sys, "stderr", Terminal())
        out = tmp_path / f"t{len(list(tmp_path.iterdir()))}.json"
        profile = ["profile", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(out)]
        assert main([*before, *profile, *after]) == 0
        return sys.stderr.getvalue()

    assert "profiling" in stderr_of([], [])  # a bar (and the notes) on a terminal by default
    assert stderr_of(["-q"], []) == "" and stderr_of([], ["-q"]) == ""


def test_a_mistyped_verb_backend_or_device_gets_a_suggestion(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["profle", "--out", str(tmp_path / "t.json")])
    assert exited.value.code == 2 and "(did you mean 'profile'?)" in capsys.readouterr().err
    assert main(["profile", "--backend", "onnxrutime", "--out", str(tmp_path / "t.json")]) == 2
    assert "unknown backend 'onnxrutime' (did you mean 'onnxruntime'?)" in capsys.readouterr().err
    assert main(["profile", "--device", "zcu012", "--out", str(tmp_path / "t.json")]) == 2
    assert "unknown device 'zcu012' (did you mean 'zcu102'?)" in capsys.readouterr().err
    assert main(["profile", "--device", "qwertyuiop", "--out", str(tmp_path / "t.json")]) == 2
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess


def test_help_lists_each_backends_flags_under_that_backend(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    text = capsys.readouterr().out
    sections = {}
    for block in text.split("\n\n"):
        head, _, body = block.partition("\n")
        if head.endswith("):") and " flags (with --backend " in head:
            sections[head.split()[0]] = body
    assert {"adb", "fpga", "nvidia", "tvm"} <= set(sections), list(sections)
    assert "--serial" in sections["adb"] and "--rpc-tracker" in sections["tvm"] and "--gpu" in sections["nvidia"]
    assert "--serial" not in sections["tvm"] and "--dpu-arch" in sections["fpga"]


def test_completion_scripts_complete_verbs_flags_and_profiles(tmp_path, capsys):
    """``completion bash`` is valid bash that completes what the parser knows; zsh and fish list the same."""
    import shutil

    assert main(["completion", "bash"]) == 0
    script = tmp_path / "ofa-deploy.bash"
    script.write_text(capsys.readouterr().out)
    if shutil.which("bash"):
        ask = 'ask() { COMP_WORDS=($1); COMP_CWORD=$2; _ofa_deploy; echo "${COMPREPLY[*]}"; }'
        cases = ["'ofa-deploy prof' 1", "'ofa-deploy profile --res' 2", "'ofa-deploy deploy --device zcu1' 3"]
        probe = f"source {script}; {ask}; " + "; ".join(f"ask {case}" for case in cases)
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["profile", "--resolutions --resume", "zcu102 zcu104"]
    assert main(["completion", "fish"]) == 0
    fish = capsys.readouterr().out
    assert "__fish_seen_subcommand_from profile' -l resolutions" in fish and "-l serial" in fish
    assert main(["completion", "zsh"]) == 0 and "bashcompinit" in capsys.readouterr().out
