"""Benchmarks: each file reads top to bottom (options, arms, summary, main) over the shared harness."""
