"""A loopback Android device for tests: a real ADB-protocol server over TCP (see server.py)."""

from tests.adb_device.server import FakeAdbDevice

__all__ = ["FakeAdbDevice"]
