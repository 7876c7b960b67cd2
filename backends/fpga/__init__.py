"""Xilinx DPU FPGA accelerators: an analytical per-layer cost model (no hardware needed)."""
