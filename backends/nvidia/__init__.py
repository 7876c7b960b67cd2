"""NVIDIA GPUs: TensorRT, ONNX Runtime or torch CUDA engines, timed with CUDA events."""
