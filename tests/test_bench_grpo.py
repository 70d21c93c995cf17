import math

import pytest


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_grpo_benchmark_writes_both_arms(tiny_causal_dir, tmp_path):
    from evals.benchmarks.grpo_overhead import main

    result = main(["--tiny", "--policy", str(tiny_causal_dir), "--output", str(tmp_path / "b.json")])
    assert set(result["median_step_seconds"]) == {"plain", "shaped"}
    assert all(t > 0 for t in result["median_step_seconds"].values())
    assert math.isfinite(result["shaped_over_plain"]) and (tmp_path / "b.json").is_file()


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_mixed_eval_engine_benchmark_times_both_engines_on_the_same_rows(tiny_causal_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    from evals.benchmarks.mixed_eval_engine import main

    result = main(["--tiny", "--policy", str(tiny_causal_dir), "--output", str(tmp_path / "b.json")])
    assert set(result["median_seconds"]) == {"ctranslate2", "hf"} and result["completions"] == 8
    assert all(r["tokens"] <= result["completions"] * 8 for rs in result["runs"].values() for r in rs)
    assert math.isfinite(result["speedup_ctranslate2_vs_hf"]) and (tmp_path / "b.json").is_file()
