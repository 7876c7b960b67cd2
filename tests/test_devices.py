"""Every shipped device profile loads and names a real backend; bad profiles get one clear line."""

import json

import pytest

from ofa_deploy.backend.profiles import builtin_profile_names, load_profile
from ofa_deploy.backend.registry import backend_names
from ofa_deploy.cli.main import main
from ofa_deploy.errors import BadInputError


@pytest.mark.parametrize("name", builtin_profile_names())
def test_every_shipped_profile_loads(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.backend in backend_names()
    assert profile.description and profile.timing.rounds >= 1
    backend = profile.create_backend(rounds=1)
    assert backend.timing.rounds == 1 and backend.timing.threads == profile.timing.threads


def test_required_profiles_exist():
    assert {"host-cpu", "xeon", "host-tflite"} <= set(builtin_profile_names())
    assert load_profile("host-cpu").backend == "onnxruntime"
    assert load_profile("xeon").backend == "openvino"
    assert load_profile("host-tflite").backend == "tflite"


def test_devices_json(capsys):
    assert main(["devices", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = {p["name"] for p in doc["profiles"]}
    assert {"host-cpu", "xeon", "host-tflite"} <= names
    assert doc["backends"]["onnxruntime"]["available"] is True


def test_devices_table(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "host-cpu" in out and "onnxruntime" in out


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: x\nbackend: onnxruntime\ncolour: red\n", "unknown key"),
        ("name: x\n", "needs 'backend'"),
        ("name: x\nbackend: warp-drive\n", "unknown backend"),
        ("name: x\nbackend: onnxruntime\ntiming: {threads: 0}\n", "positive integer"),
        ("name: x\nbackend: onnxruntime\ntiming: {speed: 3}\n", "unknown timing option"),
        ("name: x\nbackend: onnxruntime\nsettings: {colour: red}\n", "unknown setting"),
        ("name: x\nbackend: onnxruntime\nresolutions: [130]\n", "allowed values"),
        ("name: x\nbackend: onnxruntime\nwidth_mult: 2\n", "width multiplier"),
        ("[1, 2]\n", "YAML mapping"),
        ("name: [x\n", "invalid YAML"),
    ],
)
def test_bad_profiles(tmp_path, text, words):
    path = tmp_path / "device.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=words):
        load_profile(str(path))


def test_custom_profile_path_is_usable(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbackend: onnxruntime\nresolutions: [160]\ntiming: {threads: 2}\n")
    profile = load_profile(str(path))
    assert profile.resolutions == (160,) and profile.create_backend().timing.threads == 2
