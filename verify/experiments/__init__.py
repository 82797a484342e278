"""Experiments and benchmarks (untrusted; produce results the checker re-verifies)."""
