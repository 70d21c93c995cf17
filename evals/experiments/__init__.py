"""Experiments: questions answered once, with their results under evals/results/."""
