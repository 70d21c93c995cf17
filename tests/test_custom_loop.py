import math

import pytest

from lenvm_rl.modeling import LengthValueModel


@pytest.mark.slow  # an RL loop
def test_custom_rl_loop_runs_on_a_tiny_model(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    from examples.custom_rl_loop import main

    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.95).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    common = [
        "--critic",
        str(ckpt),
        "--policy",
        str(tiny_causal_dir),
        "--iterations",
        "2",
        "--max_new_tokens",
        "8",
        "--lr",
        "1e-3",
    ]
    history = main(common + ["--mode", "advantage"])
    assert len(history) == 2
    assert all(math.isfinite(h["length_adv_abs"]) and h["length_adv_abs"] > 0 for h in history)
    # The relative term is gated on correct answers: a random policy answers no addition right, so it is zero.
    history = main(common)
    assert all(h["correct"] == 0 and h["length_adv_abs"] == 0 for h in history)
