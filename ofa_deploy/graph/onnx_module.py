"""The ``onnx`` package, imported when a graph is first read or written (a dependency of ofa-deploy,
but a broken environment gets one line saying so instead of a traceback)."""

from __future__ import annotations

from typing import Any

from ofa_deploy.errors import RuntimeMissingError


def onnx_module() -> Any:
    """``import onnx``; RuntimeMissingError (exit 3) with the install command when it is missing."""
    try:
        import onnx
    except ImportError:
        raise RuntimeMissingError(
            "the 'onnx' package (a dependency of ofa-deploy) is not installed: pip install onnx"
        ) from None
    return onnx
