"""The test suite's own contract with pytest-xdist (tests/conftest.py): tests that share a module-scoped
fixture run on one worker, and tests marked ``serial`` run one after another on one worker. A pytest
or xdist upgrade that silently drops the groups fails here instead of making the suite slow or flaky."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def shared_once():
    return object()


def _under_loadgroup(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "loadgroup", False))


def test_a_module_fixture_user_is_grouped_with_its_module(request, shared_once):
    assert request.node.get_closest_marker("xdist_group").args == ("test_suite_groups",)
    if _under_loadgroup(request.config):  # on a worker: xdist put the group into the node id
        assert request.node.nodeid.endswith("@test_suite_groups"), request.node.nodeid


@pytest.mark.serial
def test_a_serial_test_is_in_the_serial_group(request):
    assert request.node.get_closest_marker("xdist_group").args == ("serial",)
    if _under_loadgroup(request.config):
        assert request.node.nodeid.endswith("@serial"), request.node.nodeid


def test_other_tests_are_spread_freely(request):
    assert request.node.get_closest_marker("xdist_group") is None and "@" not in request.node.nodeid
