"""The documented command lines are the CLI's: every ``ofa-deploy ...`` line in a code block of the
README and docs/*.md names a verb that exists, with flags that verb accepts (a flag renamed or removed
from the CLI fails here until the docs follow); and the blocks marked as executed run here and print
what they show (the first run found the fpga.md example's 8 ms budget infeasible on the ZCU102, and
the README's `info` table aligned differently than `info` prints it)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from ofa_deploy.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")


def documented_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every ``ofa-deploy`` command in the file's code blocks, continuation
    lines (``\\``) joined, shell comments and output lines left out."""
    commands, inside, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        text = line.strip()
        if pending:
            pending += " " + text.rstrip("\\").strip()
        elif re.match(r"^ofa-deploy [\w-]+: ", text):  # what the CLI printed (`ofa-deploy compile: error: ...`)
            continue
        elif re.match(r"^(\$ )?ofa-deploy(\s|$)", text):
            pending, start = text.removeprefix("$ ").rstrip("\\").strip(), number
        else:
            continue
        if not text.endswith("\\"):
            commands.append((start, pending))
            pending = ""
    return commands


def _words(command: str) -> list[str]:
    command = re.split(r"\s#\s", command, maxsplit=1)[0]  # a trailing shell comment
    command = re.split(r"\s*(\||&&|;|>|2>)\s*", command, maxsplit=1)[0]  # what the line pipes into
    return shlex.split(command)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def problems(command: str) -> list[str]:
    """What is wrong with one documented command line: an unknown verb or flags the verb lacks."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    words = _words(command)[1:]
    while words and words[0].startswith("-"):  # global flags before the verb
        if words[0] not in _options(parser):
            return [f"unknown global flag {words[0]}"]
        words = words[1:]
    if not words:
        return []  # `ofa-deploy --version` and the like
    verb, rest = words[0], words[1:]
    if verb not in verbs:
        return [f"no verb {verb!r}"]
    known = _options(verbs[verb])
    flags = [w.split("=", 1)[0] for w in rest if w.startswith("-") and not re.fullmatch(r"-[0-9.]+", w)]
    return [f"`ofa-deploy {verb}` has no {flag}" for flag in flags if flag not in known]


COMMANDS = [(path, number, command) for path in DOCS for number, command in documented_commands(path)]


def test_the_docs_hold_commands_to_check():
    assert len(COMMANDS) > 40 and {path.name for path, _, _ in COMMANDS} >= {"README.md", "fpga.md", "adb.md"}


def test_a_flag_the_cli_lacks_is_found():
    assert problems("ofa-deploy profile --device zcu102 --warmup 3 --out t.json") == [
        "`ofa-deploy profile` has no --warmup"
    ]
    assert problems("ofa-deploy profiles --out t.json") == ["no verb 'profiles'"]
    assert problems("ofa-deploy -v info --arch a.json -q  # a comment --nope") == []


@pytest.mark.parametrize(("path", "number", "command"), COMMANDS, ids=[f"{p.name}:{n}" for p, n, _ in COMMANDS])
def test_every_documented_flag_exists(path, number, command):
    assert not problems(command), f"{path.name}:{number}: {problems(command)} in: {command}"


# ---------------------------------------------------------------------- executed docs
# A console block right after this marker is run here, command by command, in a scratch folder (the
# repository's examples/ beside it, ../shared as the real one, the reference CNNs as ONNX files), and
# every output line it shows must appear in what the command prints, in order. Shown lines are
# compared with runs of spaces collapsed and durations ("in 0.54 s") masked; a line ending in "..."
# matches any line it begins; a line that is only "..." stands for lines left out.
MARK = "<!-- executed by tests/test_docs_commands.py -->"
DURATION = re.compile(r"\b\d+(\.\d+)? s\b")


def executed_blocks(path: Path) -> list[tuple[int, list[tuple[str, list[str]]]]]:
    """(line number, [(command, shown output lines)]) of every marked console block of ``path``."""
    lines, blocks = path.read_text().splitlines(), []
    for index, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        assert FENCE.match(lines[index + 1]), f"{path.name}:{index + 1}: {MARK} must precede a code block"
        steps: list[tuple[str, list[str]]] = []
        k = index + 2
        while not FENCE.match(lines[k]):
            text = lines[k]
            if text.startswith("$ "):
                command = text[2:]
                while command.rstrip().endswith("\\"):
                    k += 1
                    command = command.rstrip()[:-1] + " " + lines[k].strip()
                steps.append((command, []))
            elif steps:
                steps[-1][1].append(text)
            k += 1
        blocks.append((index + 2, steps))
    return blocks


def _normal(line: str) -> str:
    return DURATION.sub("N s", " ".join(line.split()))


def missing_lines(shown: list[str], printed: list[str]) -> list[str]:
    """The shown lines not found in ``printed`` (in order; see the comment above)."""
    actual = [_normal(line) for line in printed]
    at, missing = 0, []
    for line in shown:
        want = _normal(line)
        if not want or want == "...":
            continue
        prefix = want.endswith("...")
        want = want.removesuffix("...").rstrip()
        found = next(
            (i for i in range(at, len(actual)) if (actual[i].startswith(want) if prefix else actual[i] == want)), None
        )
        if found is None:
            missing.append(line)
        else:
            at = found + 1
    return missing


def test_a_shown_line_the_command_does_not_print_is_found():
    printed = ["best: r192 | k3e3", "      81.88% predicted top-1; searched in 0.96 s", "wrote best.json"]
    assert missing_lines(["best: r192 | k3e3", "   81.88% predicted top-1; searched in 0.54 s", "..."], printed) == []
    assert missing_lines(["wrote best.json", "best: r192 | k3e3"], printed) == ["best: r192 | k3e3"]  # order
    assert missing_lines(["81.80% predicted top-1; searched in 0.54 s"], printed) == [
        "81.80% predicted top-1; searched in 0.54 s"
    ]
    assert missing_lines(["best: r192 ..."], printed) == []


EXECUTED = [(path, number, steps) for path in DOCS for number, steps in executed_blocks(path)]


def test_the_docs_hold_executed_blocks():
    assert len(EXECUTED) >= 3 and sum(len(steps) for _, _, steps in EXECUTED) >= 3


@pytest.mark.parametrize(("path", "number", "steps"), EXECUTED, ids=[f"{p.name}:{n}" for p, n, _ in EXECUTED])
def test_executed_blocks_print_what_they_show(path, number, steps, tmp_path, monkeypatch, capsys):
    from ofa_deploy.cli.main import main
    from tests.reference_cnns import reference_models

    shared = REPO.parent / "shared"
    if any("../shared" in command for command, _ in steps) and not shared.is_dir():
        pytest.skip("../shared (the official OFA data) is not beside the repository")
    import onnx

    for name, file in (("cf_resnet50", "resnet50.onnx"), ("cf_mobilenetv2", "mobilenetv2.onnx")):
        onnx.save(reference_models()[name](), str(tmp_path / file))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    for command, shown in steps:
        words = _words(command.replace("../shared", str(shared)))
        code = main([*words[1:], "--no-progress"] if words[1] in ("search", "profile") else words[1:])
        captured = capsys.readouterr()
        printed = (captured.out + captured.err).splitlines()
        assert code == 0, f"{path.name}:{number}: `{command}` exited {code}: {printed[-3:]}"
        missing = missing_lines(shown, printed)
        assert not missing, f"{path.name}:{number}: `{command}` did not print {missing}; it printed:\n" + "\n".join(
            printed
        )
