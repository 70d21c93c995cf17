"""The quickstart's validation split: drawn from the training prompts only, and used to choose the epoch."""

import json

import pytest

from lenvm_rl.quickstart import QuickstartConfig, run_quickstart, split_prompts, split_validation
from lenvm_rl.rollouts import load_prompts


def test_validation_split_comes_from_training_prompts_and_leaves_the_held_out_split_alone():
    prompts = load_prompts("builtin")
    plain = QuickstartConfig(categories="one_word,list", seed=3)
    with_val = QuickstartConfig(categories="one_word,list", seed=3, validation_prompts_per_category=5)
    train, held = split_prompts(prompts, with_val)
    assert held == split_prompts(prompts, plain)[1]  # holding back validation prompts does not move the test set
    assert split_validation(train, plain) == (train, [])
    rest, val = split_validation(train, with_val)
    assert sorted(p["category"] for p in val) == ["list"] * 5 + ["one_word"] * 5
    ids = lambda ps: {p["prompt_id"] for p in ps}  # noqa: E731
    assert ids(rest) | ids(val) == ids(train) and not ids(rest) & ids(val) and not ids(val) & ids(held)
    assert split_validation(train, with_val) == (rest, val)  # seeded
    assert split_validation(train, QuickstartConfig(seed=4, validation_prompts_per_category=5))[1] != val
    with pytest.raises(ValueError, match="too few to hold back 40"):
        split_validation(train, QuickstartConfig(validation_prompts_per_category=40))
    with pytest.raises(ValueError, match=">= 0"):
        split_validation(train, QuickstartConfig(validation_prompts_per_category=-1))


@pytest.mark.slow  # a whole quickstart
def test_quickstart_with_a_validation_split_keeps_the_best_epoch(tmp_path, tiny_causal_dir):
    cfg = QuickstartConfig(
        output_dir=str(tmp_path / "qs"),
        model=str(tiny_causal_dir),
        categories="one_word,yes_no",
        eval_prompts_per_category=2,
        validation_prompts_per_category=3,
        eval_samples=4,  # the truth needs two finished answers per prompt: the tiny model ends ~60 % by 16 tokens
        max_new_tokens=16,
        num_train_epochs=3,
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        max_length=96,
        bf16=False,  # the check below evaluates in fp32; bf16 autocast (the default on AVX512-BF16 CPUs) is 5e-4 off
    )
    report = run_quickstart(cfg)
    model_dir = tmp_path / "qs" / "model"
    val = report["validation"]
    assert [e["epoch"] for e in val["epoch_losses"]] == [1, 2, 3]
    assert val["best_loss"] == min(e["loss"] for e in val["epoch_losses"])
    assert {"epoch": val["best_epoch"], "loss": val["best_loss"]} in val["epoch_losses"]
    assert json.loads((model_dir / "validation.json").read_text()) == val
    assert not list(model_dir.glob("checkpoint-*"))  # the per-epoch copies are gone once the best is kept
    assert "Validation loss by epoch" in (tmp_path / "qs" / "summary.md").read_text()
    # the rollouts' sampling is saved with the critic: guided decoding's candidates follow it (lenvm_rl.candidates)
    saved = json.loads((model_dir / "lenvm_config.json").read_text())["rollout_sampling"]
    assert saved == {"temperature": cfg.temperature, "top_p": cfg.top_p}

    # The model kept scores the best validation loss: rebuild the validation set and evaluate it.
    from transformers import AutoTokenizer

    from lenvm_rl.data import build_dataset, load_rollouts
    from lenvm_rl.modeling import LengthValueModel
    from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

    train, _ = split_prompts(load_prompts("builtin"), cfg)
    val_ids = {p["prompt_id"] for p in split_validation(train, cfg)[1]}
    records = [r for r in load_rollouts(tmp_path / "qs" / "rollouts_train.jsonl") if r["prompt_id"] in val_ids]
    assert {r["prompt_id"] for r in records} == val_ids
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    val_ds, _ = build_dataset(records, tokenizer, max_length=96, truncated="censor")
    args = LengthValueConfig(
        output_dir=str(tmp_path / "eval"), use_cpu=True, report_to=[], per_device_eval_batch_size=16
    )
    trainer = LengthValueTrainer(
        LengthValueModel.from_pretrained(model_dir), args, eval_dataset=val_ds, processing_class=tokenizer
    )
    assert trainer.evaluate()["eval_loss"] == pytest.approx(val["best_loss"], rel=1e-4)


@pytest.mark.slow  # trains a tiny LenVM
def test_no_ground_truth_is_a_clear_error(tmp_path, tiny_causal_dir, tokenizer):
    from conftest import make_records

    from lenvm_rl.quickstart import train_and_report

    train = make_records(tokenizer, n=12, seed=1)
    held = make_records(tokenizer, n=6, seed=2)  # one answer per prompt: the truth needs two finished ones
    cfg = QuickstartConfig(
        output_dir=str(tmp_path / "qs"), model=str(tiny_causal_dir), num_train_epochs=1, max_length=64, bf16=False
    )
    with pytest.raises(ValueError, match="two finished completions"):
        train_and_report(cfg, train, held)


def test_trunk_layers_minus_one_is_every_layer_and_the_rate_follows_what_trains(tiny_causal_dir):
    from transformers import AutoConfig

    from lenvm_rl.quickstart import resolve_trunk_and_rate

    n = AutoConfig.from_pretrained(tiny_causal_dir).num_hidden_layers
    assert QuickstartConfig().trunk_layers == 0 and QuickstartConfig().padding_free  # the measured default
    assert resolve_trunk_and_rate(QuickstartConfig(), str(tiny_causal_dir)) == (0, 1e-4)  # full fine-tuning
    assert resolve_trunk_and_rate(QuickstartConfig(trunk_layers=-1), str(tiny_causal_dir)) == (n, 1e-3)  # head alone
    assert resolve_trunk_and_rate(QuickstartConfig(trunk_layers=n), str(tiny_causal_dir)) == (n, 1e-3)
    if n > 1:  # layers above the trunk still train: full fine-tuning's rate
        assert resolve_trunk_and_rate(QuickstartConfig(trunk_layers=1), str(tiny_causal_dir)) == (1, 1e-4)
    assert resolve_trunk_and_rate(QuickstartConfig(trunk_layers=-1, learning_rate=5e-4), str(tiny_causal_dir)) == (
        n,
        5e-4,
    )
    with pytest.raises(ValueError, match="-1 \\(all layers\\)"):
        resolve_trunk_and_rate(QuickstartConfig(trunk_layers=-2), str(tiny_causal_dir))
    with pytest.raises(ValueError, match="trunk_layers 0 to use freeze_layers"):
        resolve_trunk_and_rate(QuickstartConfig(trunk_layers=-1, freeze_layers=1), str(tiny_causal_dir))
