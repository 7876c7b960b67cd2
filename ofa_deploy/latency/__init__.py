"""Latency: lookup tables, profiling on a backend, validation against end-to-end runs, calibration."""
