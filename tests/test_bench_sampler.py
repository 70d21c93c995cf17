"""evals/benchmarks/rollout_sampler.py: the tiny mode runs both samplers end to end and writes a well-formed result;
no timing is asserted."""

import json
import math

import pytest

from evals.benchmarks import rollout_sampler


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_sampler_benchmark_writes_both_arms(tmp_path):
    result = rollout_sampler.main(["--tiny", "--output", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["command"].startswith("python -m evals.benchmarks.rollout_sampler --tiny")
    for arm in rollout_sampler.ARMS:
        s = result["arms"][arm]
        assert s["completions"] == 8 and s["seconds"] > 0 and all(0 <= n <= 8 for n in s["lengths"])
    assert math.isfinite(result["continuous_over_hf"]) and 0.0 <= result["ks_distance"] <= 1.0


def test_ks_distance_by_hand():
    assert rollout_sampler.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert rollout_sampler.ks_distance([1, 1], [5, 5]) == 1.0
    assert math.isclose(rollout_sampler.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]), 0.5)
