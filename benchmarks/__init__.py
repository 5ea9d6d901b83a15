"""Benchmarks of sharedrec against plain numpy on the same data; see README.md."""
