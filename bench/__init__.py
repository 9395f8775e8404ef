"""Benchmark programs: run from the repository root as `python -m bench.<name>`."""
