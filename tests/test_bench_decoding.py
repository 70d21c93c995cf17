"""evals/bench_decoding.py: the tiny mode runs end to end and writes a well-formed result; no timing assertions."""

from __future__ import annotations

import json
import math

import torch

from evals import bench_decoding


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_benchmark_writes_every_arm(tmp_path):
    out = tmp_path / "bench_decoding.json"
    result = bench_decoding.main(["--tiny", "--quiet", "--dtype", "fp32", "--output", str(out)])

    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"], default=str))
    assert saved["benchmark"] == "lenvm_decoding"
    assert saved["command"].startswith("python -m evals.bench_decoding --tiny")
    assert {"cpu", "cores", "torch", "transformers", "device"} <= set(saved["machine"])
    cfg = saved["config"]
    assert cfg["mode"] == "tiny" and cfg["shape"] == "tiny"
    rows = saved["results"]
    assert [(r["batch"], r["k"]) for r in rows] == [(b, k) for b in cfg["batch_sizes"] for k in cfg["ks"]]
    for r in rows:
        for key in ("plain_ms_per_token", "guided_ms_per_token", "plain_decode_ms_per_step",
                    "guided_decode_ms_per_step", "tree_ms_per_step", "naive_cached_ms_per_step",
                    "naive_crop_ms_per_step", "naive_full_ms_per_step"):
            assert _finite_positive(r[key]), key
        for key in ("guided_over_plain", "guided_over_plain_decode", "guided_over_plain_paired", "naive_over_tree",
                    "naive_crop_over_tree", "naive_full_over_tree", "naive_over_tree_paired"):
            assert _finite_positive(r[key]), key
        # every measured run of every arm is there, with the configured number of steps
        assert all(len(r["runs"]["generate"][arm]) == cfg["repeats"] for arm in ("plain", "guided"))
        assert len(r["runs"]["scoring"]) == cfg["repeats"]
        assert all(len(steps) == cfg["score_steps"]
                   for run in r["runs"]["scoring"] for steps in run["step_ms"].values())
        # all scorers agree on the values (fp32): the arms compute the same thing
        assert set(r["max_abs_diff"]) == {"naive_cached_vs_tree", "naive_crop_vs_tree", "naive_full_vs_tree"}
        assert all(d < 1e-4 for d in r["max_abs_diff"].values()), r["max_abs_diff"]
    goals = saved["goals"]
    assert set(goals) == {"tree_ge_3x_naive_at_k15", "guided_over_plain_le_1.3_gpu"}
    assert set(goals["tree_ge_3x_naive_at_k15"]["met"]) == {f"batch {b}" for b in cfg["batch_sizes"]}
    assert "naive/tree" in saved["markdown"] and "guided/plain" in saved["markdown"]


def test_naive_scorers_match_tree_scorer():
    """The baselines score the same states as TreeScorer, over several steps and left-padded rows."""
    from transformers import LlamaConfig, LlamaModel

    from lenvm_rl.modeling import LengthValueModel
    from lenvm_rl.scoring import TreeScorer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, pad_token_id=2, eos_token_id=2)
    model = LengthValueModel(LlamaModel(cfg), gamma=0.99).eval()
    ids, mask, _ = bench_decoding.make_prompts(3, 10, 300, [2], seed=0)
    assert mask[0].all() and not mask.all()  # row 0 is the longest; others are left-padded
    scorers = [TreeScorer(model), bench_decoding.NaiveCachedScorer(model, copy=True),
               bench_decoding.NaiveCachedScorer(model, copy=False)]
    for s in scorers:
        s.start(ids[:, :-1], mask[:, :-1])
    g = torch.Generator().manual_seed(1)
    previous = ids[:, -1]
    for _ in range(3):
        cands = bench_decoding.random_ids((3, 4), 300, [2], g)
        outs = [s.step(previous, cands) for s in scorers]
        for v_prev, v_cand in outs[1:]:
            torch.testing.assert_close(v_prev, outs[0][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(v_cand, outs[0][1], atol=1e-5, rtol=0)
        previous = cands[:, 0]


def test_copy_cache_is_a_real_copy():
    from transformers import DynamicCache

    k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    cache = DynamicCache(ddp_cache_data=[(k, v)])
    dup = bench_decoding.copy_cache(cache)
    dup.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 0)
    assert cache.get_seq_length() == 5 and dup.get_seq_length() == 6
    assert dup.layers[0].keys.data_ptr() != cache.layers[0].keys.data_ptr()
