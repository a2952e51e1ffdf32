"""Benchmarks (the performance tier) and the evaluation harness: see tools/README.md."""
