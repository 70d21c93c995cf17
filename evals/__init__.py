"""Evaluations and benchmarks for lenvm-rl (DESIGN section 6)."""
