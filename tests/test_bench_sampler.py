"""evals/benchmarks/rollout_sampler.py: the tiny mode runs every sampler end to end and writes a well-formed result;
no timing is asserted."""

import json
import math

import pytest

from evals.benchmarks import rollout_sampler


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_sampler_benchmark_writes_every_arm(tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    monkeypatch.setenv("LENVM_RL_CACHE", str(tmp_path / "cache"))
    result = rollout_sampler.main(["--tiny", "--output", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["command"].startswith("python -m evals.benchmarks.rollout_sampler --tiny")
    assert list(result["arms"]) == list(rollout_sampler.ARMS)
    for arm in rollout_sampler.ARMS:
        s = result["arms"][arm]
        assert s["completions"] == 8 and s["seconds"] > 0 and all(0 <= n <= 8 for n in s["lengths"])
        assert math.isfinite(s["over_hf"]) and 0.0 <= s["ks_vs_hf"] <= 1.0 and 0.0 <= s["ks_p_vs_hf"] <= 1.0
    assert result["arms"]["hf"]["over_hf"] == 1.0
    # the int8 arm is timed without a distribution check only inside the benchmark
    from lenvm_rl import ct2_engine

    with pytest.raises(ValueError, match="engine_distribution"):
        ct2_engine.check_quantized("m", "int8", None)


def test_arms_must_start_with_the_reference():
    with pytest.raises(ValueError, match="start with hf"):
        rollout_sampler.SamplerBenchOptions(arms="ctranslate2,hf")
    with pytest.raises(ValueError, match="start with hf"):
        rollout_sampler.SamplerBenchOptions(arms="hf,fast")


def test_ks_by_hand():
    assert rollout_sampler.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert rollout_sampler.ks_distance([1, 1], [5, 5]) == 1.0
    assert math.isclose(rollout_sampler.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]), 0.5)
    # the asymptotic p-value: identical samples give 1; D = 0.2 with 200 per arm gives about 0.0006 (Kolmogorov's limit law)
    assert rollout_sampler.ks_test([1, 2, 3], [1, 2, 3]) == (0.0, 1.0)
    a, b = list(range(200)), list(range(40, 240))
    d, p = rollout_sampler.ks_test(a, b)
    assert math.isclose(d, 0.2) and 0.0003 < p < 0.001


@pytest.mark.slow  # a benchmark script, tiny (about 40 s: the engine converts the model)
def test_tiny_engine_batching_benchmark_runs_every_arm(tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    from evals.benchmarks import engine_batching

    monkeypatch.setenv("LENVM_RL_CACHE", str(tmp_path / "cache"))
    arms = "one:1:1:4,two_in_flight:2:1:2"
    result = engine_batching.main(["--tiny", "--arms", arms, "--output", str(tmp_path / "e.json")])
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["command"].endswith(f"--arms {arms} --output {tmp_path / 'e.json'}")
    assert [r["name"] for r in result["arms"]] == ["one", "two_in_flight"]
    for r in result["arms"]:  # 4 prompts x 2 samples, each within the 8-token cap
        assert r["tokens"] <= 8 * 8 and r["tokens_per_s"] > 0 and 0 <= r["cut"] <= 1
    assert result["arms"][0]["vs_first"] == 1.0
    with pytest.raises(SystemExit, match="name:inter_threads"):
        engine_batching.main(["--tiny", "--arms", "bad:1:2"])
