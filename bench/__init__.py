"""Reproducible benchmarks; each prints a table (run with `python -m bench.NAME`)."""
