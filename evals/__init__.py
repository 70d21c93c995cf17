"""Benchmarks (``evals.benchmarks``, over one harness), experiments (``evals.experiments``; ``rl_length_shaping``
joins them later) and their figures in results/. The evaluations ship with the package: ``lenvm eval NAME``.
"""
