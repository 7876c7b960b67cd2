"""Jetson and any TVM RPC target: TVM Relax builds, cross-compiled, timed over TVM RPC."""
