"""Benchmarks: `python -m benchmarks.NAME` (never run by the test suite)."""
