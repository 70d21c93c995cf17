"""Evaluations and benchmarks for lenvm-rl (docs/method.md)."""
