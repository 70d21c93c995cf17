"""evals/benchmarks/roofline.py: FLOP counts by hand, and the tiny mode end to end (no timing asserted)."""

import json
import math

import pytest
from transformers import LlamaConfig

from evals.benchmarks import roofline

SMOL = LlamaConfig(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    head_dim=64, vocab_size=49152,
)  # fmt: skip


def test_flops_of_the_default_model_by_hand():
    # a layer: q and o 576 x 576, k and v 576 x 192, MLP 3 x 576 x 1536
    assert roofline.layer_weights(SMOL) == 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536
    # decode without context: 2 x (30 layers + the 576 x 49152 LM head) = 0.269 GFLOP (the issue's ~0.27)
    assert math.isclose(roofline.decode_flops_per_token(SMOL, 0) / 1e9, 0.2691, abs_tol=1e-3)
    # attention against 100 earlier tokens: 4 x 30 x 100 x 576
    assert roofline.attention_flops(SMOL, 100) == 4 * 30 * 100 * 576
    full = roofline.train_flops_per_token(SMOL, None, 3, 0)
    assert math.isclose(full, 6 * 30 * roofline.layer_weights(SMOL))
    # a frozen trunk of all 30 layers: its forward once over 3 epochs, nothing trained above it
    assert math.isclose(roofline.train_flops_per_token(SMOL, 30, 3, 0), full / 3 / 3)


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_roofline_runs_every_arm(tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    monkeypatch.setenv("LENVM_RL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    result = roofline.main(["--tiny", "--samplers", "hf,ctranslate2", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["samplers"]) == {"hf", "ctranslate2"} and set(saved["trainers"]) == {"today", "L1", "L2"}
    for arm in [*result["samplers"].values(), *result["trainers"].values()]:
        assert arm["tokens_per_s"] > 0 and arm["limit_tokens_per_s"] > 0
        assert math.isclose(arm["fraction_of_limit"], arm["tokens_per_s"] / arm["limit_tokens_per_s"], rel_tol=1e-9)
    assert all(v > 0 for v in saved["matmul_gflops"]["decode_mlp"].values())
