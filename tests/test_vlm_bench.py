"""evals/benchmarks/vlm_scoring.py: the tiny mode runs end to end, writes the naive / tree ratios, and the tree's
values equal one-by-one scoring over a prefix that holds image tokens; no timing assertions."""

from __future__ import annotations

import json
import math

from evals.benchmarks import vlm_scoring


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_vlm_scoring_benchmark(tmp_path):
    out = tmp_path / "bench_vlm_scoring.json"
    result = vlm_scoring.main(["--tiny", "--quiet", "--dtype", "fp32", "--threads", "1", "--output", str(out)])

    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"], default=str))
    assert saved["benchmark"] == "lenvm_vlm_scoring"
    assert saved["command"].startswith("python -m evals.benchmarks.vlm_scoring --tiny")
    cfg = saved["config"]
    assert cfg["mode"] == "tiny" and cfg["shape"] == "tiny" and cfg["model_config"]["model_type"] == "qwen2_5_vl"
    rows = saved["results"]
    assert [(r["batch"], r["k"]) for r in rows] == [(b, k) for b in cfg["batch_sizes"] for k in cfg["ks"]]
    for r in rows:
        assert r["image_tokens"] == (cfg["image_size"] // 28) ** 2
        assert all(n > r["image_tokens"] for n in r["prompt_lengths"])  # the prefix holds the image tokens
        for key in (
            "tree_ms_per_step",
            "naive_cached_ms_per_step",
            "naive_crop_ms_per_step",
            "naive_full_ms_per_step",
            "prefill_ms",
            "naive_over_tree",
            "naive_crop_over_tree",
            "naive_full_over_tree",
            "naive_over_tree_paired",
        ):
            assert _finite_positive(r[key]), key
        assert len(r["runs"]) == cfg["repeats"]
        assert all(len(steps) == cfg["score_steps"] for run in r["runs"] for steps in run["step_ms"].values())
        # tree and one-by-one scoring agree (fp32): the arms compute the same values
        assert set(r["max_abs_diff"]) == {"naive_cached_vs_tree", "naive_crop_vs_tree", "naive_full_vs_tree"}
        assert all(d < 1e-4 for d in r["max_abs_diff"].values()), r["max_abs_diff"]
    assert "naive/tree" in saved["markdown"]
