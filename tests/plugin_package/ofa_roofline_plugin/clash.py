"""A backend registered under a name ofa-deploy already owns (``onnxruntime``).

The toolkit must refuse this entry point (one warning line naming this package and ofa-deploy)
and keep its built-in backend; this class is never loaded when discovery works as documented.
"""

from __future__ import annotations

from ofa_roofline_plugin.roofline import RooflineBackend


class ShadowOnnxRuntimeBackend(RooflineBackend):
    name = "onnxruntime"
    description = "a plugin trying to take over the built-in onnxruntime backend (must be refused)"
