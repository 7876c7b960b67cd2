"""The documented command lines are the CLI's: every ``ofa-deploy ...`` line in a code block of the
README and docs/*.md names a verb that exists, with flags that verb accepts (a flag renamed or removed
from the CLI fails here until the docs follow)."""

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
