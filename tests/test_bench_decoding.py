"""evals/benchmarks/decoding_overhead.py: the tiny mode runs end to end and writes a well-formed result; no timing
assertions."""

from __future__ import annotations

import json
import math

import pytest

from evals.benchmarks import decoding_overhead


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_benchmark_writes_every_arm(tmp_path):
    out = tmp_path / "bench_decoding.json"
    result = decoding_overhead.main(["--tiny", "--quiet", "--dtype", "fp32", "--output", str(out)])

    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"], default=str))
    assert saved["benchmark"] == "lenvm_decoding"
    assert saved["command"].startswith("python -m evals.benchmarks.decoding_overhead --tiny")
    assert {"cpu", "cores", "torch", "transformers", "device"} <= set(saved["machine"])
    cfg = saved["config"]
    assert cfg["mode"] == "tiny" and cfg["shape"] == "tiny"
    rows = saved["results"]
    assert [(r["batch"], r["k"]) for r in rows] == [(b, k) for b in cfg["batch_sizes"] for k in cfg["ks"]]
    for r in rows:
        for key in (
            "plain_ms_per_token",
            "guided_ms_per_token",
            "plain_decode_ms_per_step",
            "guided_decode_ms_per_step",
            "tree_ms_per_step",
            "naive_cached_ms_per_step",
            "naive_crop_ms_per_step",
            "naive_full_ms_per_step",
        ):
            assert _finite_positive(r[key]), key
        for key in (
            "guided_over_plain",
            "guided_over_plain_decode",
            "guided_over_plain_paired",
            "naive_over_tree",
            "naive_crop_over_tree",
            "naive_full_over_tree",
            "naive_over_tree_paired",
        ):
            assert _finite_positive(r[key]), key
        # every measured run of every arm is there, with the configured number of steps
        assert all(len(r["runs"]["generate"][arm]) == cfg["repeats"] for arm in ("plain", "guided"))
        assert len(r["runs"]["scoring"]) == cfg["repeats"]
        assert all(
            len(steps) == cfg["score_steps"] for run in r["runs"]["scoring"] for steps in run["step_ms"].values()
        )
        # all scorers agree on the values (fp32): the arms compute the same thing
        assert set(r["max_abs_diff"]) == {"naive_cached_vs_tree", "naive_crop_vs_tree", "naive_full_vs_tree"}
        assert all(d < 1e-4 for d in r["max_abs_diff"].values()), r["max_abs_diff"]
    goals = saved["goals"]
    assert set(goals) == {"tree_ge_3x_naive_at_k15", "guided_over_plain_le_1.3_gpu"}
    assert set(goals["tree_ge_3x_naive_at_k15"]["met"]) == {f"batch {b}" for b in cfg["batch_sizes"]}
    assert "naive/tree" in saved["markdown"] and "guided/plain" in saved["markdown"]
