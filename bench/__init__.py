"""Benchmarks: events/s per core as a ratio to plain pyarrow (``make bench``)."""
