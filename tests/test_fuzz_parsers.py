"""Property-based fuzzing of every parser of user input (issue 11, item 4).

The property, for every parser: on arbitrary input (random text and bytes, and structured documents
built from valid ones with mutated fields: wrong types, missing keys, NaN/inf, negatives, huge
numbers, unicode, nested junk) it either returns a valid object or raises an
:class:`~ofa_deploy.errors.OFADeployError` subclass, which the CLI turns into one line and exit code.
No other exception type may escape.

Examples per test come from a hypothesis profile: ``ci`` (the default: few examples, derandomised so
CI is reproducible) or ``fuzz`` (``OFA_DEPLOY_FUZZ=1``, 1000 examples per test, random seeds):

    OFA_DEPLOY_FUZZ=1 pytest -q tests/test_fuzz_parsers.py

Bugs found in files this suite may not fix are tolerated inside the properties only through
:data:`KNOWN_BUGS` (matched on the file, function and exception type that escaped), and each one is
pinned by a strict ``xfail`` test with a concrete input: when the bug is fixed the pin XPASSes, and
both the pin and its ``KNOWN_BUGS`` entry are to be removed.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import os
import re
import struct
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ofa_deploy.errors import OFADeployError

# ---------------------------------------------------------------------- profiles

_COMMON = dict(
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints its example (and a blob to replay)
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=1000, **_COMMON)
PROFILE = "fuzz" if os.environ.get("OFA_DEPLOY_FUZZ") == "1" else "ci"
FUZZ = settings.get_profile(PROFILE)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"

# ---------------------------------------------------------------------- known bugs (files this suite may not fix)


class MultiLine:
    """In a KNOWN_BUGS entry: the function raises an OFADeployError whose message is not one line."""


# name -> (path suffix of the innermost repository frame, function, exception types, what is wrong). Each one is
# pinned below by a strict xfail named test_known_bug_<name>_...: fix the bug, then delete both.
KNOWN_BUGS: dict[str, tuple[str, str, tuple[type[BaseException], ...], str]] = {}


_OURS = re.compile(r"/(ofa_deploy|backends)/")


def _known_bug(exc: BaseException, multi_line: bool = False) -> str | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _OURS.search(f.filename)]
    if not frames:
        return None
    inner = frames[-1]
    for suffix, function, types, reason in KNOWN_BUGS.values():
        matches = MultiLine in types if multi_line else isinstance(exc, types)
        if inner.filename.endswith(suffix) and inner.name == function and matches:
            return reason
    return None


def parse_or_refuse(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call``'s result, or None when it refused the input with an OFADeployError; anything else escapes."""
    try:
        result = call(*args, **kwargs)
    except OFADeployError as exc:
        message = str(exc)
        assert message.strip(), f"{type(exc).__name__} with an empty message"
        if "\n" in message or "\r" in message:  # the CLI prints it as its one line on stderr
            reason = _known_bug(exc, multi_line=True)
            if reason is None:
                raise AssertionError(f"not one line: {message!r}") from exc
            event(f"known bug: {reason}")
            return None
        event(f"{getattr(call, '__name__', 'call')}: refused ({type(exc).__name__})")  # --hypothesis-show-statistics
        return None
    except Exception as exc:
        reason = _known_bug(exc)
        if reason is None:
            raise
        event(f"known bug: {reason}")
        return None
    event(f"{getattr(call, '__name__', 'call')}: accepted")
    return result


# ---------------------------------------------------------------------- strategies

NASTY_NUMBERS = [0, -1, 1, -0.0, 2**31, 2**63, -(2**63), 10**30, 10**400, -(10**400), 1e308, -1e308, 5e-324]
NASTY_NUMBERS += [math.nan, math.inf, -math.inf, 0.5, 1.2, 160, 4096]
NASTY_TEXT = ["", " ", "\x00", "two\nlines", "cr\r\nlf", "é", "💥", "\u202e", "١٦٠", "²", "1e999", "NaN", "-1"]
NASTY_TEXT += ["null", "all", "x" * 300, "\ud83d"]  # the last: a lone surrogate (JSON can hold one: "\\ud83d")
# Text that standard parsers refuse with something other than their own error type: an integer over Python's
# 4300-digit limit (ValueError from json and yaml), nesting deeper than the stack (RecursionError).
HOSTILE_TEXT = ["9" * 5000, "[" * 100_000, '{"a":' * 100_000, "- " * 50_000, '{"format": ' + "9" * 5000 + "}"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(NASTY_NUMBERS),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(NASTY_TEXT),
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(NASTY_TEXT))


def _nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)


json_values = st.recursive(scalars, _nested, max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON-like document, the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _at(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def _retype(draw: st.DrawFn, value: Any) -> Any:
    """The same value in another type, or a nearby nasty value of the same type."""
    if isinstance(value, bool):
        return draw(st.sampled_from([int(value), str(value).lower(), None, not value]))
    if isinstance(value, int):
        as_float = float(value) if abs(value) < 2**1000 else 1e300
        return draw(st.sampled_from([str(value), as_float, -value, value * 10**20, [value], value + 1, 0]))
    if isinstance(value, float):
        nearby = int(value) if math.isfinite(value) else 0
        return draw(st.sampled_from([str(value), nearby, -value, math.nan, math.inf]))
    if isinstance(value, str):
        return draw(
            st.sampled_from(
                [value.upper(), value + "\x00", f"{value}\n{value}", value[:1], f"{value}💥", [value], {value: value}]
            )
        )
    if isinstance(value, list):
        return draw(st.sampled_from([value[:1], value * 2, value[::-1], {"0": value}, None]))
    if isinstance(value, dict):
        return draw(st.sampled_from([list(value), list(value.values()), None, json.dumps(value)]))
    return draw(scalars)


@st.composite
def mutated(draw: st.DrawFn, document: Any, max_mutations: int = 3) -> Any:
    """``document`` with a few fields replaced, retyped, removed or added (anywhere in its nesting)."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["junk", "retype", "retype", "delete", "add", "nested"]))
        if not path:  # the root
            if action in ("junk", "nested"):
                doc = draw(json_values)
            elif action == "retype":
                doc = _retype(draw, doc)
            continue
        parent, last = _at(doc, path[:-1]), path[-1]
        if action == "delete":
            del parent[last]
        elif action == "add":
            target = _at(doc, path)
            if isinstance(target, dict):
                target[draw(keys)] = draw(json_values)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(json_values))
            else:
                parent[last] = draw(json_values)
        elif action == "retype":
            parent[last] = _retype(draw, parent[last])
        elif action == "nested":
            parent[last] = draw(json_values)
        else:
            parent[last] = draw(scalars)
    return doc


def json_text(document: Any) -> str:
    return json.dumps(document, allow_nan=True, indent=1)  # NaN / Infinity tokens: Python's json reads them back


def yaml_text(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


NUMBER_TEXT = st.sampled_from(["1e999", "-5", "0", "-0", "99999999999999999999999999", ".5", "1e-400", "7", "+3"])
HOSTILE_NUMBER = "9" * 5000
EVENT_LINES = ["ERROR: failed", "Segmentation fault", "INFO: count=", "@@ofa-deploy begin m0 0", "@@ofa-deploy done"]


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """Line-level damage: lines dropped, duplicated, cut, numbers replaced, junk and error lines added."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "dup", "cut", "number", "insert", "truncate"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if action == "insert" or not lines:
            lines.insert(i, draw(st.one_of(st.text(max_size=40), st.sampled_from(NASTY_TEXT + EVENT_LINES))))
        elif action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif action == "number":
            spans = [m.span() for m in re.finditer(r"\d+\.?\d*", lines[i])]
            if spans:
                a, b = draw(st.sampled_from(spans))
                number = draw(st.one_of(NUMBER_TEXT, st.just(HOSTILE_NUMBER)))
                lines[i] = lines[i][:a] + number + lines[i][b:]
        else:
            lines = lines[:i]
    return "\n".join(lines)


def json_files(document: Any, max_mutations: int = 3) -> st.SearchStrategy[str]:
    """A JSON file made from ``document``: mutated fields, damaged lines, or both."""
    return st.one_of(
        mutated(document, max_mutations).map(json_text),
        st.just(json_text(document)).flatmap(mutated_text),
        mutated(document, max_mutations).map(json_text).flatmap(mutated_text),
    )


def yaml_files(document: Any) -> st.SearchStrategy[str]:
    return st.one_of(mutated(document).map(yaml_text), mutated(document).map(yaml_text).flatmap(mutated_text))


raw_text = st.one_of(st.text(max_size=200), st.sampled_from(NASTY_TEXT + HOSTILE_TEXT))
raw_bytes = st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\xff\xfe\x00", b"{", b"\x80" * 10]))


def _write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    return path


# ---------------------------------------------------------------------- valid seeds (built once)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def lut_file(tmp_path_factory) -> Path:
    """A complete toolkit LUT (resolution 160, the analytical FPGA model: no timing noise, ~1 s)."""
    from ofa_deploy.cli.main import main

    out = tmp_path_factory.mktemp("lut") / "dpu.lut.json"
    argv = ["-q", "profile", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def lut_document(lut_file) -> dict:
    doc = json.loads(lut_file.read_text())
    doc["calibration"] = {"slope": 1.1, "intercept": 0.2, "fitted_on": 12, "backend": "fpga", "date": "2025-01-01"}
    return doc


@pytest.fixture(scope="module")
def official_yaml(lut_file, tmp_path_factory) -> dict:
    from ofa_deploy.latency.table import LatencyTable

    [path] = LatencyTable.load(lut_file).save_official(tmp_path_factory.mktemp("official"))
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def manifest_document(tmp_path_factory) -> dict:
    """The manifest of a real bundle (compiled for the FPGA cost model: no runtime, a second or two)."""
    from ofa_deploy.cli.main import main
    from ofa_deploy.space.arch import save_arch_file, smallest_arch

    d = tmp_path_factory.mktemp("bundle")
    save_arch_file(d / "arch.json", smallest_arch(160))
    assert main(["-q", "compile", "--arch", str(d / "arch.json"), "--device", "dpu-b4096", "--out", str(d / "b")]) == 0
    return json.loads((d / "b" / "manifest.json").read_text())


VALID_ARCH = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 4] * 5, "d": [2, 3, 4, 3, 2], "r": 160}
OFFICIAL_ARCH = {"wid": None, "ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": [224], "width_mult": 1.2}

# ---------------------------------------------------------------------- Arch JSON


@FUZZ
@given(st.one_of(mutated(VALID_ARCH), mutated(OFFICIAL_ARCH), json_values))
def test_arch_from_dict(doc):
    from ofa_deploy.space.arch import Arch, width_mult_from

    arch = parse_or_refuse(Arch.from_dict, doc, "fuzz.json")
    if arch is not None:
        assert Arch.from_dict(arch.to_dict()) == arch and arch.stable_hash()
        parse_or_refuse(width_mult_from, doc, None, "fuzz.json")


@FUZZ
@given(st.one_of(json_files(VALID_ARCH), json_files(OFFICIAL_ARCH), raw_text, raw_bytes))
def test_load_arch_file(workdir, content):
    from ofa_deploy.space.arch import load_arch_file

    parse_or_refuse(load_arch_file, _write(workdir, "arch.json", content))


@FUZZ
@given(st.one_of(scalars, json_values))
def test_check_width_mult(value):
    from ofa_deploy.space.arch import WIDTH_MULTS, check_width_mult

    w = parse_or_refuse(check_width_mult, value, "fuzz")
    assert w is None or w in WIDTH_MULTS


# ---------------------------------------------------------------------- latency tables


def _check_table(table) -> None:
    """A loaded table is usable: what every verb does next (width, identity, a prediction)."""
    from ofa_deploy.space.arch import ArchBatch, smallest_arch

    parse_or_refuse(lambda: table.identity())
    for r in table.resolutions[:2]:
        if r in range(128, 225, 4):
            predicted = parse_or_refuse(table.predict_batch, ArchBatch.from_archs([smallest_arch(r)]))
            assert predicted is None or not np.isnan(predicted).any(), predicted


@FUZZ
@given(data=st.data())
def test_toolkit_lut(workdir, lut_document, data):
    from ofa_deploy.latency.table import load_lut

    content = data.draw(st.one_of(json_files(lut_document), raw_text, raw_bytes), label="file")
    table = parse_or_refuse(load_lut, _write(workdir, "lut.json", content))
    if table is not None:
        _check_table(table)


@FUZZ
@given(data=st.data())
def test_official_yaml_lut(workdir, official_yaml, data):
    from ofa_deploy.latency.table import load_lut

    content = data.draw(st.one_of(yaml_files(official_yaml), raw_text, raw_bytes), label="file")
    name = data.draw(st.sampled_from(["160_lookup_table.yaml", "176_lookup_table.yaml", "lut.yaml"]), label="name")
    table = parse_or_refuse(load_lut, _write(workdir, name, content))
    if table is not None:
        _check_table(table)
    directory = workdir / "official"  # the directory form: every <r>_lookup_table.yaml in it
    directory.mkdir(exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    _write(directory, "160_lookup_table.yaml", yaml_text(official_yaml))
    _write(directory, name, content)
    table = parse_or_refuse(load_lut, directory)
    if table is not None:
        _check_table(table)


@FUZZ
@given(data=st.data())
def test_table_metadata(lut_document, data):
    from ofa_deploy.latency.metadata import TableMetadata

    doc = data.draw(st.one_of(mutated(lut_document["metadata"]), json_values), label="metadata")
    meta = parse_or_refuse(TableMetadata.from_dict, doc, "fuzz.json")
    if meta is not None:
        json.dumps(meta.to_dict())


# ---------------------------------------------------------------------- bundle manifest


@FUZZ
@given(data=st.data())
def test_manifest(workdir, manifest_document, data):
    from ofa_deploy.deploy.integrity import DIGEST_FIELD, manifest_digest
    from ofa_deploy.deploy.manifest import Manifest, read_manifest

    doc = data.draw(st.one_of(mutated(manifest_document, 4), json_values), label="manifest")
    manifest = parse_or_refuse(Manifest.parse, doc, workdir / "manifest.json")
    if manifest is not None:
        assert manifest.files and manifest.arch
    sealed = json_text(doc)
    if isinstance(doc, dict):  # past the self-digest: the mutated fields themselves reach the checks
        sealed = parse_or_refuse(lambda: json_text({**doc, DIGEST_FIELD: manifest_digest(doc)})) or sealed
    content = data.draw(
        st.one_of(st.just(sealed), st.just(json_text(doc)).flatmap(mutated_text), raw_text, raw_bytes), label="file"
    )
    bundle = workdir / "bundle"
    bundle.mkdir(exist_ok=True)
    _write(bundle, "manifest.json", content)
    parse_or_refuse(read_manifest, bundle)


# ---------------------------------------------------------------------- device profiles and backend settings


def _builtin_profiles() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted((REPO / "device_profiles").glob("*.yaml"))]


PROFILES = _builtin_profiles()


@FUZZ
@given(st.one_of(st.sampled_from(PROFILES).flatmap(mutated), json_values))
def test_parse_profile(doc):
    from ofa_deploy.backend.profiles import parse_profile

    profile = parse_or_refuse(parse_profile, doc, "fuzz.yaml")
    if profile is not None:
        json.dumps(profile.to_dict())


@FUZZ
@given(data=st.data())
def test_load_profile(workdir, data):
    from ofa_deploy.backend.profiles import load_profile

    content = data.draw(st.one_of(st.sampled_from(PROFILES).flatmap(yaml_files), raw_text, raw_bytes), label="file")
    name = data.draw(st.sampled_from(["p.yaml", "p.yml", "p.txt"]), label="name")
    parse_or_refuse(load_profile, str(_write(workdir, name, content)))


def _settings_classes() -> dict[str, type]:
    import importlib

    from ofa_deploy.backend.registry import builtin_backends

    out = {}
    for name, target in builtin_backends().items():
        module, _, cls = target.partition(":")
        out[name] = getattr(importlib.import_module(module), cls).Settings
    return out


SETTINGS = _settings_classes()
SETTINGS_SEEDS = [(name, dataclasses.asdict(cls())) for name, cls in SETTINGS.items()]
SETTINGS_SEEDS += [(p["backend"], p.get("settings") or {}) for p in PROFILES]


@FUZZ
@given(data=st.data())
def test_backend_settings(data):
    from ofa_deploy.backend.settings import parse_settings

    name, seed = data.draw(st.sampled_from(SETTINGS_SEEDS), label="seed")
    doc = data.draw(st.one_of(mutated(seed), json_values), label="settings")
    if not isinstance(doc, dict):
        doc = {"value": doc}
    parsed = parse_or_refuse(parse_settings, SETTINGS[name], doc, f"backend '{name}'")
    if parsed is not None:
        for key, value in parsed.to_dict().items():
            assert not (isinstance(value, float) and not math.isfinite(value)), (key, value)


@FUZZ
@given(data=st.data())
def test_recorded_settings(data):
    """Settings a LUT or a bundle recorded: only measurement ones may come back (issue 23)."""
    name, seed = data.draw(st.sampled_from(SETTINGS_SEEDS), label="seed")
    doc = data.draw(mutated(seed), label="recorded")
    if isinstance(doc, dict):
        kept, ignored = SETTINGS[name].from_record(doc)
        assert not set(kept) & SETTINGS[name].local_fields() and set(ignored) <= SETTINGS[name].local_fields()


@FUZZ
@given(st.one_of(raw_text, st.builds(" ".join, st.lists(st.one_of(raw_text, NUMBER_TEXT), max_size=5))))
def test_adb_lock_owner_line(text):
    """The owner line of an adb device lock is read back from the device: any text is handled."""
    from ofa_deploy.backends.adb.lock import DeviceLock

    lock = DeviceLock("/data/local/tmp/fuzz.lock")
    assert lock._stale(text) in (True, False) and "\n" not in DeviceLock._who(text)


# ---------------------------------------------------------------------- benchmark_model output


def _parsers() -> list[type]:
    from ofa_deploy.backend.interface import OutputParser
    from ofa_deploy.backend.registry import backend_class, backend_names

    return [backend_class(n) for n in backend_names() if issubclass(backend_class(n), OutputParser)]


PARSERS = _parsers()
TOOL_OUTPUTS = {
    cls.name: [p.read_text() for p in sorted((FIXTURES / cls.tool_name).glob("*.txt"))] or [""] for cls in PARSERS
}
_STATS_LINE = st.builds(
    lambda pairs: "INFO: " + " ".join(f"{k}={v}" for k, v in pairs),
    st.lists(st.tuples(st.sampled_from(["count", "first", "curr", "min", "max", "avg", "std", "median"]), NUMBER_TEXT)),
)


@pytest.mark.parametrize("parser", PARSERS, ids=[cls.name for cls in PARSERS])
def test_tool_output(parser):
    """Every backend with the OutputParser role, fed its tool's recorded outputs mutated, arbitrary
    text and statistics lines: a run with finite, non-negative figures, or one line of refusal."""

    @FUZZ
    @given(st.one_of(st.sampled_from(TOOL_OUTPUTS[parser.name]).flatmap(mutated_text), raw_text, _STATS_LINE))
    def check(text):
        result = parse_or_refuse(parser.parse_output, text)
        if result is not None:
            assert math.isfinite(result.mean_ms) and result.mean_ms >= 0, result
            assert result.count is None or result.count >= 0, result

    check()


# ---------------------------------------------------------------------- accuracy predictors and datasets


def _small_mlp(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((8, 128)).astype(np.float32), rng.standard_normal((1, 8)).astype(np.float32)]
    biases = [rng.standard_normal(8).astype(np.float32), rng.standard_normal(1).astype(np.float32)]
    return weights, biases


JUNK_ARRAYS = st.sampled_from(
    [
        np.zeros((0,)),
        np.zeros((8, 127), dtype=np.float32),
        np.full((8, 128), np.nan, dtype=np.float32),
        np.full((1, 8), np.inf),
        np.zeros((1, 8), dtype=np.int64),
        np.array(["a", "b"]),
        np.zeros((1, 8), dtype=np.complex64),
        np.zeros((1, 8), dtype=bool),
        np.float32(1.0),
        np.zeros((2, 2, 2)),
        np.array([1e39], dtype=np.float64),
    ]
)


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    from ofa_deploy.search.predictors import ENCODING, FORMAT

    weights, biases = _small_mlp()
    arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(weights)} | {f"b{i}": b for i, b in enumerate(biases)}
    header: Any = {"format": FORMAT, "encoding": ENCODING, "layers": 2, "rmse": 0.01}
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["header", "header-text", "array", "drop", "add"]))
        if action == "header":
            header = draw(mutated(header if isinstance(header, dict) else {"layers": 2}))
        elif action == "header-text":
            arrays["header"] = np.frombuffer(draw(raw_bytes) or b"{}", dtype=np.uint8)
        elif action == "array":
            arrays[draw(st.sampled_from(sorted(arrays)))] = draw(JUNK_ARRAYS)
        elif action == "drop" and arrays:
            arrays.pop(draw(st.sampled_from(sorted(arrays))))
        else:
            arrays[draw(st.sampled_from(["w2", "b2", "x"]))] = draw(JUNK_ARRAYS)
    if "header" not in arrays:
        arrays["header"] = np.frombuffer(json_text(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _check_predictor(predictor) -> None:
    from ofa_deploy.space.arch import largest_arch, smallest_arch

    for arch in (smallest_arch(), largest_arch()):
        value = predictor.predict(arch)
        assert math.isfinite(value), value


@FUZZ
@given(data=st.data())
def test_npz_predictor(workdir, data):
    from ofa_deploy.search.predictors import load_accuracy_predictor

    content = data.draw(st.one_of(npz_files(), raw_bytes), label="file")
    predictor = parse_or_refuse(load_accuracy_predictor, _write(workdir, "p.npz", content))
    if predictor is not None:
        _check_predictor(predictor)


@st.composite
def pth_files(draw: st.DrawFn) -> bytes:
    import torch

    weights, biases = _small_mlp()
    state: Any = {}
    for i, (w, b) in enumerate(zip(weights, biases)):
        state[f"{2 * i}.weight"] = torch.from_numpy(w)
        state[f"{2 * i}.bias"] = torch.from_numpy(b)
    junk_values = st.one_of(
        scalars,
        st.sampled_from(
            [
                torch.zeros(8, 127),
                torch.full((8, 128), float("nan")),
                torch.zeros(1, 8, dtype=torch.int64),
                torch.zeros(1, 8, dtype=torch.complex64),
                torch.zeros(()),
                torch.zeros(2, 2, 2),
                [1, 2],
                {"0.weight": 1},
            ]
        ),
    )
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["value", "key", "drop", "add", "wrap", "root"]))
        if not isinstance(state, dict) or not state:
            state = {"0.weight": torch.zeros(1, 128)}
        if action == "value":
            state[draw(st.sampled_from(sorted(state, key=str)))] = draw(junk_values)
        elif action == "key":
            old = draw(st.sampled_from(sorted(state, key=str)))
            state[draw(st.one_of(keys, st.sampled_from(["².weight", "٣.weight", "1x.bias", ".weight", "9.bias"])))] = (
                state.pop(old)
            )
        elif action == "drop":
            state.pop(draw(st.sampled_from(sorted(state, key=str))))
        elif action == "add":
            state[draw(keys)] = draw(junk_values)
        elif action == "wrap":
            state = {"state_dict": state}
        else:
            state = draw(st.one_of(junk_values, st.just([state])))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch on random bytes: "Detected pickle protocol ..."
@FUZZ
@given(data=st.data())
def test_pth_predictor(workdir, data):
    from ofa_deploy.search.predictors import load_accuracy_predictor

    content = data.draw(st.one_of(pth_files(), raw_bytes), label="file")
    predictor = parse_or_refuse(load_accuracy_predictor, _write(workdir, "p.pth", content))
    if predictor is not None:
        _check_predictor(predictor)


def _dataset_records() -> list[dict]:
    from ofa_deploy.space.arch import sample_batch

    batch = sample_batch(np.random.default_rng(0), 12)
    return [{**a.to_dict(), "accuracy": 0.7 + 0.01 * i} for i, a in enumerate(batch.to_archs())]


RECORDS = _dataset_records()


def _csv_text(records: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["ks", "e", "d", "r", "accuracy"])
    for record in records:
        if isinstance(record, dict):
            row = [record.get(k) for k in ("ks", "e", "d", "r", "accuracy")]
            writer.writerow([json.dumps(v) if isinstance(v, list) else v for v in row])
        else:
            writer.writerow([record])
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_dataset(workdir, data):
    from ofa_deploy.search.predictors import load_dataset

    records = data.draw(mutated(RECORDS), label="records")
    if not isinstance(records, list):
        records = [records]
    content = data.draw(
        st.one_of(
            st.just("\n".join(json.dumps(r) for r in records)).flatmap(mutated_text),
            st.just(_csv_text(records)),
            st.just(_csv_text(RECORDS)).flatmap(mutated_text),
            raw_text,
            raw_bytes,
        ),
        label="file",
    )
    name = data.draw(st.sampled_from(["d.jsonl", "d.csv", "d.ndjson", "d.txt"]), label="name")
    result = parse_or_refuse(load_dataset, _write(workdir, name, content))
    if result is not None:
        archs, accuracy = result
        assert len(archs) == len(accuracy) >= 10
        assert np.isfinite(accuracy).all(), accuracy


# ---------------------------------------------------------------------- ONNX models


def _reference_models() -> list[bytes]:
    from ofa_deploy.graph.ir import build_graph
    from ofa_deploy.graph.onnx_writer import to_onnx_bytes
    from ofa_deploy.space.arch import smallest_arch
    from ofa_deploy.space.ops import arch_ops
    from tests import reference_cnns

    models = [reference_cnns.squeezenet().SerializeToString(), reference_cnns.resnet18().SerializeToString()]
    models.append(reference_cnns.mobilenet_v2(0.5).SerializeToString())
    models.append(to_onnx_bytes(build_graph(arch_ops(smallest_arch(128), 1.0))))
    return models


ONNX_SEEDS = _reference_models()
ONNX_OPS = [
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Add", "Sum", "Sub", "Mul", "Div", "Concat",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "Clip", "Transpose",
    "Pad", "Relu", "HardSwish", "Reshape", "Flatten", "Shape", "Softmax", "Constant", "If", "Foo", "",
]  # fmt: skip
ATTRIBUTES = ["group", "strides", "kernel_shape", "perm", "axes", "mode", "min", "max", "pads", "dilations", "value"]
ATTRIBUTE_VALUES = st.one_of(
    st.integers(-3, 5),
    st.sampled_from([0, -1, 2**40, 10**18, math.nan, math.inf, 0.5, "constant", "reflect", "", "💥", b"\xff"]),
    st.lists(st.integers(-5, 5), max_size=5),
    st.sampled_from([[], [0, 0], [2**40], [-1, -1]]),
)


@st.composite
def onnx_models(draw: st.DrawFn) -> bytes:
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.ParseFromString(draw(st.sampled_from(ONNX_SEEDS)))
    graph = model.graph
    for _ in range(draw(st.integers(1, 3))):
        action = draw(
            st.sampled_from(
                ["op", "attr", "attr", "attr", "input", "output", "drop-node", "dims", "size", "size", "init"]
                + ["opset", "ir", "dup"]
            )
        )
        node = graph.node[draw(st.integers(0, len(graph.node) - 1))] if len(graph.node) else None
        if action == "op" and node is not None:
            node.op_type = draw(st.sampled_from(ONNX_OPS))
            if draw(st.booleans()):
                node.domain = draw(st.sampled_from(["", "ai.onnx", "com.example", "ai.onnx.ml"]))
        elif action == "attr" and node is not None:
            name = draw(st.sampled_from(ATTRIBUTES))
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            node.attribute.extend(kept)
            with contextlib.suppress(ValueError, TypeError):  # a value onnx cannot hold as an attribute
                node.attribute.append(helper.make_attribute(name, draw(ATTRIBUTE_VALUES)))
        elif action == "input" and node is not None:
            names = [n for other in graph.node for n in other.output] + [i.name for i in graph.input] + ["", "nope"]
            if len(node.input) and draw(st.booleans()):
                node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
            elif len(node.input):
                del node.input[-1]
            else:
                node.input.append(draw(st.sampled_from(names)))
        elif action == "output" and node is not None and len(node.output):
            node.output[0] = draw(st.sampled_from(["", "input", "prob", node.output[0] + "_x"]))
        elif action == "drop-node" and node is not None:
            graph.node.remove(node)
        elif action == "dup" and node is not None:
            graph.node.insert(draw(st.integers(0, len(graph.node))), node)
        elif action == "dims" and len(graph.input):
            value = graph.input[draw(st.integers(0, len(graph.input) - 1))]
            dims = value.type.tensor_type.shape.dim
            if len(dims) and draw(st.integers(0, 4)):
                dim = dims[draw(st.integers(0, len(dims) - 1))]
                choice = draw(st.sampled_from([0, -1, 1, 2, 7, 2**40, "N", None]))
                dim.Clear()
                if isinstance(choice, str):
                    dim.dim_param = choice
                elif choice is not None:
                    dim.dim_value = choice
            elif draw(st.booleans()):
                value.type.tensor_type.ClearField("shape")
            else:
                value.type.tensor_type.elem_type = draw(st.sampled_from([0, 2, 7, 8, 16, 99]))
        elif action == "size":  # the data input's channels or spatial size: valid models with other shapes
            dims = graph.input[0].type.tensor_type.shape.dim
            if len(dims) > 1:
                dims[draw(st.integers(1, len(dims) - 1))].dim_value = draw(st.sampled_from([1, 2, 3, 7, 31, 1000]))
        elif action == "init" and len(graph.initializer):
            tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
            if draw(st.booleans()):
                tensor.dims[:] = draw(st.lists(st.sampled_from([0, 1, 3, -1, 2**20]), max_size=4))
            else:
                tensor.data_type = draw(st.sampled_from([0, 1, 6, 7, 8, 99]))
        elif action == "opset" and len(model.opset_import):
            model.opset_import[0].version = draw(st.sampled_from([1, 6, 10, 11, 13, 99, 10**6]))
        elif action == "ir":
            model.ir_version = draw(st.sampled_from([0, 1, 3, 7, 99]))
    data = model.SerializeToString()
    if draw(st.integers(0, 9)) == 0:  # byte-level damage
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8)) + data[cut + 1 :]
    return data


def _check_layers(layers) -> None:
    from ofa_deploy.graph.onnx_reader import MAX_DIM, MAX_ELEMENTS, MAX_KERNEL

    for layer in layers:
        for dim in (*layer.in_shape, *layer.out_shape, *layer.kernel, layer.stride, layer.groups, layer.inputs):
            assert isinstance(dim, int) and dim >= 1, layer
        assert isinstance(layer.params, int) and 0 <= layer.params <= MAX_ELEMENTS, layer
        assert max(*layer.in_shape, *layer.out_shape) <= MAX_DIM * MAX_DIM and layer.stride <= MAX_KERNEL, layer
        assert layer.macs >= 0


@FUZZ
@given(st.one_of(onnx_models(), raw_bytes))
def test_onnx_reader(data):
    from ofa_deploy.graph.onnx_reader import layers_from_onnx

    layers = parse_or_refuse(layers_from_onnx, data, "fuzz.onnx")
    if layers is not None:
        _check_layers(layers)
        parse_or_refuse(_fpga().estimate_layers, layers)  # what `ofa-deploy estimate` does next


def _fpga():
    from ofa_deploy.backend.registry import create_backend

    return create_backend("fpga")


@FUZZ
@given(content=st.one_of(onnx_models(), raw_bytes))
def test_onnx_reader_on_a_path(workdir, content):
    from ofa_deploy.graph.onnx_reader import layers_from_onnx

    parse_or_refuse(layers_from_onnx, _write(workdir, "m.onnx", content))


@pytest.fixture(scope="module")
def external_fifo(tmp_path_factory):
    """A FIFO that ONNX external data points at, and the number of times someone opened it to read.
    A watcher waits for a reader and feeds it, so a regression fails the test instead of hanging it."""
    fifo = tmp_path_factory.mktemp("external") / "weights.bin"
    os.mkfifo(fifo)
    opened, done = [], threading.Event()

    def watch() -> None:
        while not done.is_set():
            with open(fifo, "wb") as f:  # blocks until a reader opens the FIFO
                if not done.is_set():
                    opened.append(1)
                    f.write(b"\0" * 64)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield fifo, opened
    done.set()
    with contextlib.suppress(OSError):  # release the watcher's open()
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    watcher.join(5)


@FUZZ
@given(data=st.data())
def test_onnx_reader_never_reads_external_data(external_fifo, data):
    """Initializers, Constant values and attribute tensors marked external: used for their shapes, or
    refused in one line; the file they name is never opened."""
    import onnx

    from ofa_deploy.graph.onnx_reader import layers_from_onnx

    fifo, opened = external_fifo
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data.draw(onnx_models(), label="model"))
    except Exception:  # byte-level damage: no tensors to mark (the other tests read such bytes)
        return
    tensors = [*model.graph.initializer]
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for tensor in data.draw(st.lists(st.sampled_from(tensors), max_size=3), label="external") if tensors else []:
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", data.draw(st.sampled_from([str(fifo), "../weights.bin"]))
    layers = parse_or_refuse(layers_from_onnx, model.SerializeToString(), "fuzz.onnx")
    if layers is not None:
        _check_layers(layers)
    assert not opened, "external data was read"


# ---------------------------------------------------------------------- a phone's batch output (adb backend)


def _batch_output() -> str:
    timing = TOOL_OUTPUTS["adb"][0]
    run = "INFO: count=3 first={0} curr={0} min={1} max={2} avg={0} std=5"
    rounds = []
    for r in range(2):
        rounds.append(f"@@ofa-deploy begin m0 {r}\n{run.format(1000 + r, 990, 1010)}\n@@ofa-deploy end 0")
        rounds.append(f"@@ofa-deploy begin ref {r}\n{run.format(500, 490, 510)}\n@@ofa-deploy end 0")
        rounds.append(f"@@ofa-deploy begin m1 {r}\n{timing}\n@@ofa-deploy end 0")
    return "\n".join(rounds) + "\n@@ofa-deploy done\n"


@FUZZ
@given(st.one_of(st.just(_batch_output()).flatmap(mutated_text), raw_text))
def test_adb_batch_output(text):
    from ofa_deploy.backends.adb.batch import parse_batch_output

    parse_or_refuse(parse_batch_output, text, ["key-a", "key-b"], "ref-key")


# ---------------------------------------------------------------------- input files, JSON Lines, strict JSON (issue 23)


@pytest.fixture(scope="module")
def special_files(tmp_path_factory) -> dict[str, Path]:
    """Paths of every kind an input flag may be given: none may hang a reader or fill the memory."""
    root = tmp_path_factory.mktemp("special")
    fifo = root / "fifo"
    os.mkfifo(fifo)
    big = root / "big"
    with open(big, "wb") as f:  # sparse: larger than every limit, no disk used
        f.truncate(3 << 30)
    (root / "link").symlink_to(fifo)
    (root / "small").write_text('{"ks": [3]}\n')
    return {
        "fifo": fifo,
        "fifo-link": root / "link",
        "big": big,
        "directory": root,
        "device": Path("/dev/zero"),
        "null": Path("/dev/null"),
        "missing": root / "missing",
        "small": root / "small",
    }


def _input_readers() -> dict[str, Callable[[Path], Any]]:
    from ofa_deploy.graph.onnx_reader import layers_from_onnx
    from ofa_deploy.inputs import input_lines, read_input_text
    from ofa_deploy.latency.measurements import read_archs, read_measurements
    from ofa_deploy.latency.table import LatencyTable
    from ofa_deploy.space.arch import load_arch_file

    return {
        "text": lambda p: read_input_text(p, "file", 64),
        "lines": lambda p: list(input_lines(p, "file", limit=64, line_limit=8)),
        "arch": load_arch_file,
        "archs": read_archs,
        "measurements": read_measurements,
        "lut": LatencyTable.load,
        "onnx": layers_from_onnx,
    }


@FUZZ
@given(
    kind=st.sampled_from(["fifo", "fifo-link", "big", "directory", "device", "null", "missing", "small"]),
    reader=st.sampled_from(["text", "lines", "arch", "archs", "measurements", "lut", "onnx"]),
)
def test_input_files_of_any_kind(special_files, kind, reader):
    """A FIFO, a device, a directory or a file over the limit is one line (exit 2), at once."""
    path = special_files[kind]
    result = parse_or_refuse(_input_readers()[reader], path)
    if kind in ("fifo", "fifo-link", "big", "device", "directory"):
        assert result is None, (kind, reader)


def _measurement_line(draw: st.DrawFn) -> str:
    arch = draw(mutated(VALID_ARCH, 2))
    arch = arch if isinstance(arch, dict) else {"arch": arch}
    return json_text({**arch, "latency_ms": draw(st.one_of(scalars, st.floats(0.01, 99)))})


@st.composite
def jsonl_files(draw: st.DrawFn) -> str:
    """JSON Lines of (mutated) measurements, repeated lines, blank, long and junk lines."""
    valid = json.dumps({**VALID_ARCH, "latency_ms": 3.5}).replace("\n", "")
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        choice = draw(st.integers(0, 9))
        if choice < 5:
            lines.append(valid.replace("3.5", str(draw(st.floats(0.1, 50)))))
        elif choice < 7 and lines:
            lines.append(draw(st.sampled_from(lines)))  # a repeated network
        elif choice == 7:
            lines.append(_measurement_line(draw).replace("\n", ""))
        elif choice == 8:
            lines.append(draw(st.sampled_from(["", " ", "x" * 70_000, "[]", "null", *NASTY_TEXT, *HOSTILE_TEXT])))
        else:
            lines.append(draw(st.text(max_size=40)))
    return "\n".join(lines)


@FUZZ
@given(content=st.one_of(jsonl_files(), raw_text, raw_bytes))
def test_measurements_and_archs_files(workdir, content):
    from ofa_deploy.latency.fit import merge_duplicates
    from ofa_deploy.latency.measurements import read_archs, read_measurements

    path = _write(workdir, "m.jsonl", content)
    parse_or_refuse(read_archs, path)
    result = parse_or_refuse(read_measurements, path)
    if result is not None:
        measurements, _ = result
        batch, latency = merge_duplicates(measurements)  # what fit does first: one row per distinct network
        assert len(batch) == len(latency) == len({m.arch for m in measurements})
        assert np.isfinite(latency).all() and (latency > 0).all()


@FUZZ
@given(json_values)
def test_strict_json(document):
    from ofa_deploy.files import strict_json

    text = parse_or_refuse(strict_json, document)
    if text is not None:
        json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} written"))


@FUZZ
@given(st.one_of(st.text(), st.sampled_from(NASTY_TEXT + ["\x1b[2J", "\x1b]0;t\x07", "\x9b31m", "a\u2028b"])))
def test_printable(text):
    from ofa_deploy.cli.output import printable

    shown = printable(text)
    assert shown.isprintable() or all(c.isprintable() or c == " " for c in shown), repr(shown)
    assert len(shown.splitlines()) <= 1


# ---------------------------------------------------------------------- TVM tracker replies (issue 23)


def _tracker_reply(draw: st.DrawFn) -> bytes:
    valid = [
        [0, ["127.0.0.1", 9190, "jetson"]],
        [0, {"server_info": [{"key": "server:jetson", "addr": ["127.0.0.1", 9190]}], "queue_info": {}}],
        [-1, "no"],
    ]
    choice = draw(st.integers(0, 3))
    if choice == 3:
        return draw(st.one_of(raw_bytes, st.sampled_from([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x05\x00"])))
    value = draw(st.one_of(st.sampled_from(valid).flatmap(mutated), json_values))
    body = draw(st.sampled_from([json.dumps(value), *HOSTILE_TEXT[:2]])).encode("utf-8", "surrogatepass")
    size = draw(st.sampled_from([len(body), len(body), len(body) + 3, 2**31 - 1, -1, 0]))
    return struct.pack("<i", size) + body


@FUZZ
@given(data=st.data())
def test_tracker_replies(data):
    """Whatever a tracker sends back, the client answers with a well-formed value or one line, exit 3."""
    pytest.importorskip("tvm", reason="the tvm extra is not installed")
    import socket

    from tvm.rpc import base

    from ofa_deploy.backends.tvm.rpc import Endpoint, TrackerClient, key_count

    reply = _tracker_reply(data.draw)
    ask = data.draw(st.sampled_from(["summary", "request"]))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(reply)
        theirs.shutdown(socket.SHUT_WR)  # then silence: a short reply ends in the deadline or EOF
        client = object.__new__(TrackerClient)
        client.base, client.endpoint, client.sock = base, Endpoint("127.0.0.1", 9190), ours
        if ask == "summary":
            summary = parse_or_refuse(client.summary, 0.2)
            if summary is not None:
                assert key_count(summary, "jetson") >= 0
        else:
            answer = parse_or_refuse(client.request, "jetson", 0.2)
            if answer is not None:
                host, port, key = answer
                assert isinstance(host, str) and isinstance(key, str) and type(port) is int and 0 < port < 65536


# ---------------------------------------------------------------------- the known bugs, pinned


def _pin(call: Callable[..., Any], *args: Any) -> None:
    """Only an OFADeployError may escape (unlike parse_or_refuse, no known bug is tolerated here)."""
    with contextlib.suppress(OFADeployError):
        call(*args)


def _lut_with(lut_document: dict, text_edit: Callable[[str], str], path: Path) -> Path:
    path.write_text(text_edit(json.dumps(lut_document)))
    return path


def test_fixed_adb_batch_tag(workdir):
    from ofa_deploy.backends.adb.batch import parse_batch_output

    _pin(parse_batch_output, "@@ofa-deploy begin mx 0\nINFO: count=3 curr=5\n@@ofa-deploy end 0\n", ["a"], None)


def test_fixed_adb_batch_marker_without_tag():
    from ofa_deploy.backends.adb.batch import parse_batch_output

    _pin(parse_batch_output, "@@ofa-deploy begin \n@@ofa-deploy done\n", ["a"], None)


def test_fixed_manifest_huge_integer(workdir, manifest_document):
    from ofa_deploy.deploy.manifest import read_manifest

    bundle = workdir / "huge-bundle"
    bundle.mkdir(exist_ok=True)
    text = json.dumps(manifest_document).replace('"threads": 1', '"threads": ' + "9" * 5000, 1)
    _write(bundle, "manifest.json", text)
    _pin(read_manifest, bundle)


def _pin_one_line(call: Callable[..., Any], *args: Any) -> None:
    try:
        call(*args)
    except OFADeployError as exc:
        assert "\n" not in str(exc), repr(str(exc))


def test_fixed_manifest_digest_lone_surrogate(workdir, manifest_document):
    from ofa_deploy.deploy.manifest import read_manifest

    bundle = workdir / "surrogate-bundle"
    bundle.mkdir(exist_ok=True)
    _write(bundle, "manifest.json", json.dumps({**manifest_document, "weights": "\ud83d"}))
    _pin(read_manifest, bundle)


def test_every_known_bug_is_pinned():
    pins = [name for name in globals() if name.startswith("test_known_bug_")]
    for name in KNOWN_BUGS:
        assert any(pin.startswith(f"test_known_bug_{name}_") for pin in pins), f"KNOWN_BUGS[{name!r}] has no pin"
