"""One conformance suite for every registered backend and each of its device profiles (issue 24, item 4).

What the core relies on, checked without a device or a measurement, so it runs for every backend here
whether or not its runtime or hardware is present: the declared identity and kind, settings that
round-trip through a table or a bundle (local ones never recorded), a status that never raises,
artifact kinds that ``compile`` and ``benchmark`` agree on, flags that fill real settings, and bad
input mapped to the documented exit codes. A new backend that passes it is done as far as the core is
concerned. (The installed test plugin goes through the same checks in tests/test_plugin.py.)
"""

from __future__ import annotations

import dataclasses

import pytest

from ofa_deploy.backend.artifact import Artifact
from ofa_deploy.backend.interface import (
    AnalyticalBackend,
    Builder,
    Deployer,
    DesignSpace,
    LocalRuntimeBackend,
    ModelFileRunner,
    OutputParser,
    RemoteDeviceBackend,
    Target,
    TargetKind,
)
from ofa_deploy.backend.profiles import load_profile, named_profiles
from ofa_deploy.backend.registry import backend_class, backend_names
from ofa_deploy.backend.settings import parse_settings
from ofa_deploy.errors import BadInputError, OFADeployError
from ofa_deploy.graph.ir import build_graph
from ofa_deploy.space.ops import resolution_ops

BACKENDS = backend_names()
PROFILES = [(named.name, load_profile(named.name).backend) for named in named_profiles().values()]
BUILDERS = [name for name in BACKENDS if issubclass(backend_class(name), Builder)]
PARSERS = [name for name in BACKENDS if issubclass(backend_class(name), OutputParser)]
RUNNERS = [name for name in BACKENDS if issubclass(backend_class(name), ModelFileRunner)]
KINDS = {
    LocalRuntimeBackend: TargetKind.LOCAL_RUNTIME,
    RemoteDeviceBackend: TargetKind.REMOTE_DEVICE,
    AnalyticalBackend: TargetKind.ANALYTICAL,
}


@pytest.mark.parametrize("name", BACKENDS)
def test_identity_and_kind_are_declared(name):
    cls = backend_class(name)
    assert cls.name == name and cls.description.strip(), name
    bases = [base for base in KINDS if issubclass(cls, base)]
    assert len(bases) == 1, f"{name}: one kind of target, got {bases}"
    assert cls.kind == KINDS[bases[0]]
    assert cls.default_profile is None or load_profile(cls.default_profile).backend == name
    fields = {f.name for f in dataclasses.fields(cls.Settings)}
    for option in cls.cli_options:  # every flag fills a real setting
        assert option.flag.startswith("--") and option.setting in fields, (name, option)
    if issubclass(cls, DesignSpace):
        assert issubclass(cls, AnalyticalBackend), f"{name}: a design space is a model's"
    if issubclass(cls, Deployer):
        assert issubclass(cls, RemoteDeviceBackend), f"{name}: only a remote device has bundles deployed to it"
    assert not getattr(cls, "__abstractmethods__", None), f"{name}: methods of its kind or roles missing"


@pytest.mark.parametrize("name", BACKENDS)
def test_status_never_raises_and_lists_targets_as_records(name):
    status = backend_class(name).status()
    assert status.name == name and isinstance(status.available, bool)
    assert status.available or status.reason, f"{name}: unavailable without a reason"
    assert set(status.settings) == {f.name for f in dataclasses.fields(backend_class(name).Settings)}
    for target in status.targets:
        assert set(target) >= {"id", "state", "ready"} and isinstance(target["ready"], bool), target
    assert all(isinstance(t, Target) for t in _attached(name))


def _attached(name: str) -> list:
    try:
        return backend_class(name).attached_targets()
    except Exception:  # a runtime not installed here: status() said why
        return []


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_settings_are_exit_2(name):
    cls = backend_class(name)
    with pytest.raises(BadInputError, match="unknown setting") as unknown:
        parse_settings(cls.Settings, {"no_such_setting": 1}, f"backend '{name}'")
    assert unknown.value.exit_code == 2
    for f in dataclasses.fields(cls.Settings):  # a mapping is no value of any setting type
        with pytest.raises(BadInputError) as wrong:
            parse_settings(cls.Settings, {f.name: {"a": 1}}, f"backend '{name}'")
        assert wrong.value.exit_code == 2 and f.name in str(wrong.value)


@pytest.mark.parametrize("name", BACKENDS)
def test_artifact_kinds_are_what_benchmark_accepts(name):
    cls = backend_class(name)
    assert len(set(cls.artifact_kinds)) == len(cls.artifact_kinds)
    if cls.artifact_kinds:
        main = Artifact(cls.artifact_kinds[0], ["model"], "input", [1, 3, 160, 160], "NCHW", "output", [1, 1000])
        main.check_kind(name, cls.artifact_kinds, "bundle")  # accepted
    foreign = Artifact("no-such-kind", ["model"], "input", [1, 3, 160, 160], "NCHW", "output", [1, 1000])
    with pytest.raises(BadInputError, match="cannot run it") as refused:
        foreign.check_kind(name, cls.artifact_kinds, "bundle")
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(("profile", "backend"), PROFILES, ids=[p for p, _ in PROFILES])
def test_profile_settings_round_trip_through_a_record(profile, backend):
    """A profile's settings parse; what a table or bundle records of them parses back to the same
    measurement settings, and a local one is never recorded."""
    cls = backend_class(backend)
    settings = parse_settings(cls.Settings, load_profile(profile).settings, profile)
    recorded = settings.recorded()
    assert not set(recorded) & cls.Settings.local_fields()
    kept, ignored = cls.Settings.from_record(recorded)
    assert ignored == [] and kept == recorded
    again = parse_settings(cls.Settings, kept, f"{profile} (read back)")
    assert again.recorded() == recorded


def test_deploy_asks_for_the_deployer_role():
    """`deploy` takes a backend by its role, never by attribute names: a remote device without the
    Deployer role (tvm) and a local runtime are refused, each in one line that says why."""
    from ofa_deploy.backend.registry import create_backend
    from ofa_deploy.fleet.deploy import require_deployable

    assert isinstance(backend_class("adb")(), Deployer)
    if "tvm" in BACKENDS:
        with pytest.raises(BadInputError, match="no Deployer role"):
            require_deployable(create_backend("tvm"))
    with pytest.raises(BadInputError, match="not a remote device"):
        require_deployable(create_backend("onnxruntime"))


@pytest.mark.parametrize("name", BUILDERS)
def test_builder_sources_are_stable_and_a_failed_build_is_one_line(name):
    """A Builder's source is the same bytes for the same graph (build caches key on it), and a build
    that fails comes back as one OFADeployError line saying what was being built, never a worker's
    traceback."""
    from ofa_deploy.backend.registry import create_backend

    status = backend_class(name).status()
    if not status.available:
        pytest.skip(f"{name}: {status.reason}")
    graph = build_graph([resolution_ops(128, 1.0)[5]])
    with create_backend(name) as backend:
        assert backend.build_workers >= 1
        assert backend.build_source(graph) == backend.build_source(graph)
        with pytest.raises(OFADeployError) as failed:
            backend.build_result(backend.submit_build(b"not a model"), "a damaged source")
    message = str(failed.value)
    assert "a damaged source" in message and "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("name", PARSERS)
def test_output_parser_refuses_output_without_timings_in_one_line(name):
    """What a tool printed when it crashed, failed or said nothing is refused with one line naming the
    model (the fuzzing of each parser with arbitrary text is in test_fuzz_parsers.py)."""
    cls = backend_class(name)
    assert cls.tool_name.strip()
    for text in ("", "Segmentation fault", "ERROR: Could not open 'm.bin'.", "\x00\ufffd no timings here"):
        with pytest.raises(OFADeployError) as refused:
            cls.parse_output(text, model="m.bin")
        message = str(refused.value)
        assert "m.bin" in message and "\n" not in message, (text, message)


@pytest.mark.parametrize("name", RUNNERS)
def test_a_model_file_runner_runs_the_artifact_its_compile_writes(name, tmp_path):
    """What `compile` writes, `benchmark --model` takes: the artifact's main file is of a kind the
    backend names in model_suffixes, opens with the artifact's input shape, and runs."""
    from pathlib import Path

    from ofa_deploy.backend.registry import create_backend

    status = backend_class(name).status()
    if not status.available:
        pytest.skip(f"{name}: {status.reason}")
    backend = create_backend(name)
    assert backend.model_suffixes and all(s.startswith(".") for s in backend.model_suffixes)
    graph = build_graph([resolution_ops(128, 1.0)[5]])
    artifact = backend.compile(graph, tmp_path)
    main_file = tmp_path / artifact.main
    assert Path(artifact.main).suffix in backend.model_suffixes, artifact.main
    session = backend.open_model_file(main_file, {})
    try:
        assert list(next(iter(session.inputs.values()))) == artifact.input_shape
        session.run()
    finally:
        session.close()
