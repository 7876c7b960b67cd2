"""Deployment: graph writers (ONNX, TFLite), compiled bundles with manifests, benchmarks."""
