import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from lenvm_rl.data import IGNORE_INDEX, LengthValueCollator
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.returns import remaining_to_value
from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer, value_metrics
from tests.conftest import REPO
from tests.train_helpers import LR, lengths_dataset, one_step

GAMMA = 0.9


@pytest.fixture
def init_dir(tmp_path, tiny_backbone, tokenizer):
    path = tmp_path / "init"
    LengthValueModel(tiny_backbone, gamma=GAMMA).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _hand_update(init_dir, tokenizer, token_mean=True):
    """Parameters after one SGD step on the loss computed by hand over all four examples."""
    model = LengthValueModel.from_pretrained(init_dir)
    batch = LengthValueCollator(tokenizer.pad_token_id)(list(lengths_dataset(tokenizer)))
    values = model(batch["input_ids"], batch["attention_mask"]).value
    mask = batch["labels"] != IGNORE_INDEX
    se = (values - remaining_to_value(batch["labels"].clamp(min=0), GAMMA).float()) ** 2 * mask
    loss = se.sum() / mask.sum() if token_mean else (se.sum(1) / mask.sum(1)).mean()
    loss.backward()
    return {k: (p - LR * p.grad).detach() for k, p in model.named_parameters()}


def _assert_params_close(state, expected, atol=1e-6):
    for k, v in expected.items():
        assert torch.allclose(state[k], v, atol=atol), k


def test_token_mean_loss_is_independent_of_gradient_accumulation(init_dir, tokenizer, tmp_path):
    expected = _hand_update(init_dir, tokenizer)
    for bs, ga in [(4, 1), (2, 2), (1, 4)]:
        model = one_step(init_dir, str(tmp_path / f"run{bs}"), bs, ga, tokenizer)
        _assert_params_close(dict(model.named_parameters()), expected)
    # the check can fail: a sequence-mean loss moves the parameters elsewhere
    seq_mean = _hand_update(init_dir, tokenizer, token_mean=False)
    assert not all(torch.allclose(seq_mean[k], expected[k], atol=1e-6) for k in expected)


@pytest.mark.slow  # torchrun, two processes
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun missing",
)
def test_token_mean_loss_is_the_same_across_two_processes(init_dir, tokenizer, tmp_path):
    result = tmp_path / "dist.pt"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(REPO / "tests" / "train_helpers.py"),
            init_dir,
            str(tmp_path / "dist"),
            str(result),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(result)
    expected = _hand_update(init_dir, tokenizer)
    _assert_params_close({k: state[k] for k in expected}, expected, atol=1e-5)


def test_auto_gamma_is_resolved_from_the_training_lengths_and_saved(tiny_backbone, tokenizer, tmp_path):
    ds = lengths_dataset(tokenizer)
    args = LengthValueConfig(output_dir=str(tmp_path / "out"), max_steps=1, report_to=[], use_cpu=True)
    trainer = LengthValueTrainer(LengthValueModel(tiny_backbone), args, train_dataset=ds, processing_class=tokenizer)
    l99 = np.quantile([2, 30, 5, 60], 0.99)
    assert trainer.gamma == pytest.approx(0.01 ** (1 / l99))
    trainer.train()
    trainer.save_model()
    assert LengthValueModel.from_pretrained(tmp_path / "out").gamma == pytest.approx(trainer.gamma)
    with pytest.raises(FileExistsError):  # a second run must not overwrite the trained checkpoint silently
        LengthValueTrainer(
            LengthValueModel(tiny_backbone),
            LengthValueConfig(output_dir=str(tmp_path / "out")),
            train_dataset=ds,
            processing_class=tokenizer,
        )


def test_resume_from_checkpoint_continues_to_the_same_weights(init_dir, tokenizer, tmp_path):
    from transformers import TrainerCallback

    class StopAfterTwo(TrainerCallback):  # an interruption right after the step-2 checkpoint
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2

    def run(out, resume=None, callbacks=None):
        model = LengthValueModel.from_pretrained(init_dir)
        args = LengthValueConfig(
            output_dir=str(out),
            max_steps=4,
            per_device_train_batch_size=2,
            save_strategy="steps",
            save_steps=2,
            report_to=[],
            use_cpu=True,
            seed=3,
            learning_rate=1e-3,
            overwrite_output_dir=True,
            disable_tqdm=True,
        )
        LengthValueTrainer(
            model, args, train_dataset=lengths_dataset(tokenizer), processing_class=tokenizer, callbacks=callbacks
        ).train(resume_from_checkpoint=resume)
        return model

    straight = run(tmp_path / "a")
    interrupted = run(tmp_path / "b", callbacks=[StopAfterTwo()])
    assert (tmp_path / "b" / "checkpoint-2" / "value_head.safetensors").is_file()
    assert not all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), interrupted.state_dict().values()))
    resumed = run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-2"))
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_lora_trains_the_head_fully_and_merges_to_the_full_layout(tiny_backbone, tokenizer, tmp_path):
    from peft import LoraConfig

    from lenvm_rl.modeling import merge_lora

    args = LengthValueConfig(
        output_dir=str(tmp_path / "lora"),
        max_steps=2,
        gamma=GAMMA,
        report_to=[],
        use_cpu=True,
        learning_rate=1e-2,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    base = tmp_path / "base"  # the adapter checkpoint refers to its base model by path, as to a hub id
    tiny_backbone.save_pretrained(base)
    trainer = LengthValueTrainer(
        LengthValueModel.from_backbone(str(base)),
        args,
        train_dataset=lengths_dataset(tokenizer),
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("v_head.")} == {
        "v_head.fc.weight",
        "v_head.fc.bias",
        "v_head.summary.weight",
        "v_head.summary.bias",
    }
    assert all("lora_" in n for n in trainable if n.startswith("backbone."))
    trainer.train()
    trainer.save_model()
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()

    trained = trainer.model.eval()
    ids = torch.randint(5, 1000, (2, 10))
    with torch.no_grad():
        expected = trained(ids).value
    loaded = LengthValueModel.from_pretrained(tmp_path / "lora").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).value, expected, atol=1e-5)
    merged_dir = merge_lora(tmp_path / "lora", tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged = LengthValueModel.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).value, expected, atol=1e-5)
    with pytest.raises(FileExistsError):
        merge_lora(tmp_path / "lora", tmp_path / "merged")


def test_value_metrics_on_a_perfect_and_an_off_prediction():
    gamma = 0.95
    labels = np.array([[IGNORE_INDEX, 4, 3, 2, 1, 0], [IGNORE_INDEX, IGNORE_INDEX, 2, 1, 0, IGNORE_INDEX]])
    perfect = np.where(labels >= 0, -(1 - gamma ** np.maximum(labels, 0)), -100.0)
    m = value_metrics(EvalPrediction(predictions=perfect, label_ids=labels), gamma)
    assert m["value_mse"] == pytest.approx(0, abs=1e-12) and m["length_mae"] == pytest.approx(0, abs=1e-6)
    assert m["mre_boundary"] == pytest.approx(0, abs=1e-6)
    doubled = np.where(labels >= 0, -(1 - gamma ** (2 * np.maximum(labels, 0))), -100.0)
    m = value_metrics(EvalPrediction(predictions=doubled, label_ids=labels), gamma)
    assert m["mre_boundary"] == pytest.approx(1.0, abs=1e-6)  # predicts twice the length: 100 % error
    assert m["online_re_50"] == pytest.approx(1.0, abs=1e-6)


# ---- censored (truncated) completions: a one-sided loss -------------------------------------------------------
def test_censored_loss_is_zero_when_the_bound_holds_and_only_pushes_values_down():
    from lenvm_rl.trainer import value_loss_sums

    labels = torch.full((1, 4), IGNORE_INDEX)
    bounds = torch.tensor([[IGNORE_INDEX, 3, 2, 1]])  # at least 3, 2, 1 tokens still to come
    bound_v = remaining_to_value(bounds.clamp(min=0), GAMMA).float()
    below = (bound_v - 0.05).clamp(min=-1.0).requires_grad_()  # predicted longer than the bound: fine
    loss, count = value_loss_sums(below, labels, bounds, GAMMA)
    assert count == 3 and loss.item() == 0.0
    loss.backward()
    assert torch.all(below.grad == 0)
    above = (bound_v + 0.05).requires_grad_()  # predicted shorter than the bound allows
    loss, _ = value_loss_sums(above, labels, bounds, GAMMA)
    assert loss.item() == pytest.approx(3 * 0.05**2, rel=1e-4)
    loss.backward()
    assert torch.all(above.grad[0, 1:] > 0) and above.grad[0, 0] == 0  # descent lowers V, never raises it
    # exact targets are untouched by the bounds' presence
    exact, n = value_loss_sums(torch.zeros(1, 2), torch.tensor([[1, 0]]), torch.full((1, 2), IGNORE_INDEX), GAMMA)
    assert n == 2 and exact.item() == pytest.approx(remaining_to_value(1, GAMMA).item() ** 2)


def _censored_dataset(tokenizer):
    """lengths_dataset plus one long completion cut without EOS (kept as censored)."""
    from datasets import Dataset

    from lenvm_rl.data import build_example

    rows = [
        dict(r, lower_bounds=[IGNORE_INDEX] * len(r["input_ids"]), censored=False) for r in lengths_dataset(tokenizer)
    ]
    rows.append(build_example([20, 11, 12], [400 + 3 * j for j in range(80)], max_length=None, censored=True))
    return Dataset.from_list(rows)


def test_a_censored_row_changes_training_and_counts_as_trained_tokens(init_dir, tokenizer, tmp_path):
    from lenvm_rl.trainer import value_loss_sums

    ds = _censored_dataset(tokenizer)
    init = LengthValueModel.from_pretrained(init_dir)
    batch = LengthValueCollator(tokenizer.pad_token_id)(list(ds))
    with torch.no_grad():
        values = init(batch["input_ids"], batch["attention_mask"]).value
    censored = batch["lower_bounds"] != IGNORE_INDEX
    bound_v = remaining_to_value(batch["lower_bounds"].clamp(min=0), GAMMA)
    assert (values[censored] > bound_v[censored]).any()  # the random head breaks the bound: the hinge is active

    def step(truncated, bs, ga):
        model = one_step(init_dir, str(tmp_path / f"{truncated}{bs}"), bs, ga, tokenizer, ds, truncated=truncated)
        return dict(model.named_parameters())

    # by hand: one SGD step on (squared errors + hinges) / (exact + censored positions)
    model = LengthValueModel.from_pretrained(init_dir)
    out = model(batch["input_ids"], batch["attention_mask"]).value
    total, count = value_loss_sums(out, batch["labels"], batch["lower_bounds"], GAMMA)
    (total / count).backward()
    expected = {k: (p - LR * p.grad).detach() for k, p in model.named_parameters()}
    for bs, ga in [(5, 1), (1, 5)]:  # the token mean holds across accumulation with censored tokens counted
        _assert_params_close(step("censor", bs, ga), expected)
    dropped = step("drop", 5, 1)
    assert not all(torch.allclose(dropped[k], expected[k], atol=1e-6) for k in expected)
    with pytest.raises(ValueError, match="truncated must be"):
        LengthValueConfig(output_dir=str(tmp_path / "x"), truncated="keep")


def test_auto_gamma_counts_censored_lengths_unless_they_are_dropped(tiny_backbone, tokenizer, tmp_path):
    ds = _censored_dataset(tokenizer)
    kw = dict(max_steps=1, report_to=[], use_cpu=True)
    censor = LengthValueTrainer(
        LengthValueModel(tiny_backbone),
        LengthValueConfig(output_dir=str(tmp_path / "a"), **kw),
        train_dataset=ds,
        processing_class=tokenizer,
    )
    drop = LengthValueTrainer(
        LengthValueModel(tiny_backbone),
        LengthValueConfig(output_dir=str(tmp_path / "b"), truncated="drop", **kw),
        train_dataset=ds,
        processing_class=tokenizer,
    )
    assert censor.gamma == pytest.approx(0.01 ** (1 / np.quantile([2, 30, 5, 60, 80], 0.99)))
    assert drop.gamma == pytest.approx(0.01 ** (1 / np.quantile([2, 30, 5, 60], 0.99)))


def test_freeze_layers_trains_only_the_upper_layers_norm_and_head_with_their_full_gradient(
    init_dir, tokenizer, tmp_path
):
    init = {k: p.detach().clone() for k, p in LengthValueModel.from_pretrained(init_dir).named_parameters()}
    expected = _hand_update(init_dir, tokenizer)  # every parameter trained: the upper ones get the same gradient
    model = one_step(init_dir, str(tmp_path / "frozen"), 4, 1, tokenizer, freeze_layers=1)
    state = dict(model.named_parameters())
    upper = [k for k in state if k.startswith(("backbone.layers.1.", "backbone.norm.", "v_head."))]
    lower = [k for k in state if k not in upper]
    assert any(k.startswith("backbone.layers.0.") for k in lower) and "backbone.embed_tokens.weight" in lower
    _assert_params_close(state, {k: expected[k] for k in upper})
    for k in lower:
        assert torch.equal(state[k], init[k]), k
    # the check can fail: without freezing, the lower layers move too
    assert not all(torch.equal(expected[k], init[k]) for k in lower)


def test_freeze_layers_refuses_what_it_cannot_do(tiny_backbone, tokenizer, tmp_path):
    from peft import LoraConfig

    with pytest.raises(ValueError, match="freeze_layers must be >= 0"):
        LengthValueConfig(output_dir=str(tmp_path / "a"), freeze_layers=-1)
    ds = lengths_dataset(tokenizer)
    args = LengthValueConfig(output_dir=str(tmp_path / "b"), gamma=GAMMA, freeze_layers=3, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=r"freeze_layers must lie in \[0, 2\]"):
        LengthValueTrainer(LengthValueModel(tiny_backbone), args, train_dataset=ds, processing_class=tokenizer)
    args = LengthValueConfig(output_dir=str(tmp_path / "c"), gamma=GAMMA, freeze_layers=1, report_to=[], use_cpu=True)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match="full fine-tuning"):
        LengthValueTrainer(
            LengthValueModel(tiny_backbone), args, train_dataset=ds, processing_class=tokenizer, peft_config=lora
        )
