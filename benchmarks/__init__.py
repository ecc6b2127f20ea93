"""Benchmarks: `python -m benchmarks.NAME` (the test suite runs some in their --quick form)."""
