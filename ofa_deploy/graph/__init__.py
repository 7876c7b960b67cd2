"""A small layer-level graph of a (sub-)network, and its writers for each runtime's format.

Per-operator latency models and whole networks come from the same builder, so a block timed
alone is exactly the block that runs inside the network: that is what makes the sum of a latency
table comparable to an end-to-end measurement. BatchNorm is folded into the convolutions (as every
inference runtime does); layouts are NCHW here and converted by each writer. Any ONNX CNN can also
be read back as a flat list of layers (``onnx_reader``, ``layers``) for analytical cost models.

This package sits low in the layers (docs/architecture.md): it imports the space, ``nn`` and the
small helpers only, so backends, latency tables and bundles can all build on it.
"""
