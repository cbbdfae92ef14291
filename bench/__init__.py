"""Benchmarks: `python -m bench` runs the side-by-side comparison (see bench/compare.py)."""
