"""Shared fixtures: the official reference data in ../shared (skipped with a reason where absent).

Every test process computes with one thread: pytest-xdist runs one worker per core, and a second
OpenMP thread per worker only spins against the other worker (a forward pass took 15x longer with two
torch threads per worker on two busy cores). Subprocesses the tests start inherit the setting. The
backends' own thread counts (``timing.threads``) are set explicitly and are not affected."""

from __future__ import annotations

import os
import time
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from ofa_deploy.backend.build_cache import CACHE_ENV  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("OFA_DEPLOY_REFERENCE", REPO.parent / "shared" / "data" / "ofa_reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"official OFA reference data not found at {REFERENCE} (../shared is absent on a user's machine)")
    return REFERENCE


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BN statistic non-trivial random values (not the init defaults)."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if not tensor.dtype.is_floating_point:
            continue
        noise = torch.randn(tensor.shape, generator=gen)
        if name.endswith("running_var"):
            tensor.copy_(0.5 + noise.abs())
        elif name.endswith("_matrix"):
            tensor.copy_(torch.eye(tensor.shape[0]) + 0.1 * noise)
        elif name.endswith(("bn.weight", "bn.bn.weight")):
            tensor.copy_(1.0 + 0.2 * noise)
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
            tensor.copy_(noise / fan_in**0.5 if tensor.dim() > 1 else 0.1 * noise)
    return model


@pytest.fixture(scope="session", autouse=True)
def _build_caches_of_this_run(tmp_path_factory):
    """ofa-deploy's build caches (TVM libraries, TensorRT engines, the CUDA driver stub) in a folder
    of this run, shared by its workers: a test may reuse what another built in the same run, but every
    run builds what it tests (with ~/.cache, a second run would read every library from the cache).
    Processes the tests start inherit it."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "ofa-deploy-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _environment_left_as_found():
    """A test that changes os.environ and leaves it changed fails (its later neighbours on the same
    worker would run in its environment: once, $XDG_CACHE_HOME left by an in-process `demo` sent the
    zig linker to an empty cache and a Jetson compile took 110 s instead of 15 s). Put back first."""
    before = dict(os.environ)
    yield
    changed = sorted(
        name
        for name in before.keys() | os.environ.keys()
        if before.get(name) != os.environ.get(name) and name not in _SET_BY_IMPORTS
    )
    if changed:
        for name in changed:
            if name in before:
                os.environ[name] = before[name]
            else:
                del os.environ[name]
        pytest.fail(f"the test left environment variables changed: {', '.join(changed)}", pytrace=False)


# pytest's own, and what libraries set when first imported (Intel's OpenMP runtime, torch's inductor,
# Ray: a test that is the first on its worker to import ray failed here when run alone)
_SET_BY_IMPORTS = {
    "PYTEST_CURRENT_TEST",
    "KMP_DUPLICATE_LIB_OK",
    "KMP_INIT_AT_FORK",
    "TORCHINDUCTOR_CACHE_DIR",
    "RAY_CLIENT_MODE",
}


TEST_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[TEST_STARTED] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's report shows what failed on the loopback phones since the test began (those
    stopped since included): the whole output of each failed device command, the benchmark stand-in's
    traceback if it crashed, and whether that phone's benchmark service was still listening."""
    report = yield
    if report.failed:
        from tests.adb_device.server import failure_report

        text = failure_report(since=item.stash.get(TEST_STARTED, 0.0))
        if text:
            report.sections.append(("loopback phones: failed device commands", text))
    return report


def pytest_itemcollected(item: pytest.Item) -> None:
    """Groups for pytest-xdist (``make test`` runs ``--dist loadgroup``), set as each test is collected
    (xdist reads them into the node ids in its own ``pytest_collection_modifyitems``):

    * tests marked ``serial`` (claims about timing or time-outs) share one group: one worker runs them
      one after another;
    * tests of a module that uses a module-scoped fixture (loopback phones, a TVM RPC cluster, a Ray
      cluster, a compiled bundle) stay together, so the fixture is built once and not once per worker;
    * everything else is spread freely."""
    if item.get_closest_marker("serial"):
        item.add_marker(pytest.mark.xdist_group("serial"))
    elif not item.get_closest_marker("xdist_group") and _uses_a_module_fixture(item):
        item.add_marker(pytest.mark.xdist_group(item.path.stem))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups holding ``slow`` tests are sent out first, so no long module starts last on an otherwise
    idle machine. The order depends only on the collected items: every worker sees the same collection."""
    slow_groups = {_group(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _group(item) not in slow_groups)  # stable: module order is kept otherwise


def _group(item: pytest.Item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0] if marker and marker.args else marker.kwargs.get("name")) if marker else item.nodeid


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a module-scoped fixture (one instance per module, wherever it is defined)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope == "module" for definitions in info.name2fixturedefs.values() for d in definitions)
