import math

from lenvm_rl.modeling import LengthValueModel


def test_custom_rl_loop_runs_on_a_tiny_model(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    from examples.custom_rl_loop import main

    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.95).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    history = main(["--critic", str(ckpt), "--policy", str(tiny_causal_dir), "--iterations", "2",
                    "--max-new-tokens", "8", "--lr", "1e-3"])
    assert len(history) == 2
    assert all(math.isfinite(h["length_adv_abs"]) and h["length_adv_abs"] > 0 for h in history)
