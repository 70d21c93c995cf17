"""LengthShapedGRPOTrainer: 2-step runs on a tiny random policy, in both shaping modes."""

import pytest
import torch
from datasets import Dataset

from lenvm_rl.critic import LengthCritic
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer


def short_reward(completions, **kwargs):
    return [1.0 if len(c) < 20 else 0.0 for c in completions]


class Recording(LengthShapedGRPOTrainer):
    seen = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        Recording.seen.append((out["advantages"].shape, out["completion_ids"].shape))
        return out


def _config(tmp_path, **kw):
    return LengthShapedGRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-4,
        temperature=1.0,
        **{"length_gate_reward": "short_reward", **kw},
    )


@pytest.mark.slow  # two GRPO steps, 3 s each
@pytest.mark.parametrize("mode", ["relative", "advantage"])
def test_two_steps_with_per_token_advantages(mode, tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Say {i} words."}]} for i in range(8)])
    Recording.seen = []
    trainer = Recording(
        model=str(tiny_causal_dir),
        reward_funcs=short_reward,
        args=_config(tmp_path, length_shaping=mode),
        train_dataset=data,
        processing_class=tokenizer,
        critic=critic,
    )
    trainer.train()
    assert Recording.seen and all(a == c for a, c in Recording.seen)  # (B, T) advantages
    logged = [h for h in trainer.state.log_history if "length/term_abs_mean" in h]
    assert logged and all(h["length/term_abs_mean"] >= 0 for h in logged)
    # Lengths count answer tokens, EOS excluded: TRL's mean length counts the EOS of every finished row.
    assert any(h["length/terminated_share"] > 0 for h in logged)  # some rows finished, so the two differ
    for h in logged:
        expected = h["completions/mean_length"] - h["length/terminated_share"]
        assert h["length/actual_length"] == pytest.approx(expected, abs=1e-4)
    if mode == "advantage":
        assert all(h["length/term_abs_mean"] > 0 for h in logged)


def test_gamma_mismatch_and_vocab_mismatch_are_refused(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    import copy

    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    data = Dataset.from_list([{"prompt": "hi"}] * 4)
    with pytest.raises(ValueError, match="differs from the critic's training gamma"):
        LengthShapedGRPOTrainer(
            model=str(tiny_causal_dir),
            reward_funcs=short_reward,
            args=_config(tmp_path, length_gamma=0.99),
            train_dataset=data,
            processing_class=tokenizer,
            critic=critic,
        )
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<zzz_policy_only>"])
    with pytest.raises(ValueError, match="differs from the critic"):
        LengthShapedGRPOTrainer(
            model=str(tiny_causal_dir),
            reward_funcs=short_reward,
            args=_config(tmp_path),
            train_dataset=data,
            processing_class=other,
            critic=critic,
        )


def test_bad_mode():
    with pytest.raises(ValueError, match="length_shaping"):
        LengthShapedGRPOConfig(output_dir="x", length_shaping="sideways", use_cpu=True)


@pytest.mark.slow  # over ~5 s on 2 cores
def test_lenvm_grpo_command_on_the_addition_task(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    import yaml

    from lenvm_rl.cli import main

    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.95).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    recipe = yaml.safe_load(
        (
            __import__("tests.conftest", fromlist=["REPO"]).REPO / "recipes/SmolLM2-135M-Instruct/grpo/config_demo.yaml"
        ).read_text()
    )
    recipe.update(
        model_name_or_path=str(tiny_causal_dir),
        critic_model_path=str(ckpt),
        max_steps=1,
        per_device_train_batch_size=4,
        max_completion_length=8,
        bf16=False,
        output_dir=str(tmp_path / "policy"),
    )
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["grpo", "--config", str(tmp_path / "r.yaml")]) == 0
    assert (tmp_path / "policy" / "model.safetensors").is_file()


def test_task_rewards():
    from lenvm_rl.rl.tasks import addition_reward, gsm8k_reward

    assert addition_reward(["12", "The answer is 13.", "no"], answer=["12", "12", "3"]) == [1.0, 0.0, 0.0]
    # The operands restated first do not count; the first stated result does, and only it.
    assert addition_reward(
        ["7 + 5 = 12", "7 + 5 = 11, no wait = 12", "The sum of 7 and 5 is 12."], answer=["12", "12", "12"]
    ) == [1.0, 0.0, 1.0]
    assert gsm8k_reward(["so 1,234 apples", "it is 5"], answer=["... #### 1234", "#### 6"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "extra",
    [
        dict(num_iterations=2, beta=0.1, loss_type="grpo"),
        dict(loss_type="dr_grpo", mask_truncated_completions=True),
        dict(peft=True),
    ],
    ids=["iterations-beta", "dr_grpo-mask", "peft"],
)
def test_works_with_grpo_options(extra, tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    data = Dataset.from_list([{"prompt": f"Say {i} words."} for i in range(8)])
    peft_config = None
    if extra.pop("peft", False):
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    Recording.seen = []
    trainer = Recording(
        model=str(tiny_causal_dir),
        reward_funcs=short_reward,
        args=_config(tmp_path, **extra),
        train_dataset=data,
        processing_class=tokenizer,
        critic=critic,
        peft_config=peft_config,
    )
    trainer.train()
    assert Recording.seen and all(a == c for a, c in Recording.seen)
    assert all(torch.isfinite(torch.tensor(h.get("loss", 0.0))) for h in trainer.state.log_history)


@pytest.mark.slow  # two processes
def test_two_process_run(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.95).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = tmp_path / "r.json"
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29541",
            str(REPO / "tests" / "grpo_dist_helper.py"),
            str(tiny_causal_dir),
            str(ckpt),
            str(tmp_path / "out"),
            str(result),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(result.read_text())
    assert data["shapes"] and all(a == c for a, c in data["shapes"])
    # The logged |term| mean of each step is rank 0's own: its recorded term averaged over its completion tokens.
    assert len(data["term_abs_mean"]) == len(data["terms"]) == 2
    for logged, step in zip(data["term_abs_mean"], data["terms"]):
        mine = next(r for r in step if r["rank"] == 0)
        term, mask = torch.tensor(mine["term"]), torch.tensor(mine["mask"])
        assert logged == pytest.approx(float((term.abs() * mask).sum() / mask.sum()), rel=1e-5, abs=1e-7)
    # Groups of 4 span the two processes (2 rows each): the `relative` term of each process equals the term
    # computed on the whole batch in one process.
    from lenvm_rl.returns import correct_group_means, relative_length_term

    assert data["terms"]
    for step in data["terms"]:
        ranks = sorted(step, key=lambda r: r["rank"])
        width = max(len(r["mask"][0]) for r in ranks)  # each process pads its completions to its own longest

        def cat(key, dtype=torch.float32, ranks=ranks, width=width):
            return torch.cat(
                [torch.nn.functional.pad(torch.tensor(r[key], dtype=dtype), (0, width - len(r[key][0]))) for r in ranks]
            )

        credit, mask = cat("credit", torch.float64), cat("mask")
        correct = torch.tensor(ranks[0]["rewards"]) >= 0.5
        assert len(correct) == len(credit) == 4
        mu, gate = correct_group_means(credit.sum(-1), mask.sum(-1), correct, 4)
        whole = relative_length_term(credit, mask, mu, gate, 1.0, 0.05)
        split = cat("term", torch.float64)
        assert torch.allclose(whole, split, atol=1e-6)
    assert any(torch.tensor(r["term"]).abs().sum() > 0 for step in data["terms"] for r in step)


def test_opposites_task():
    from lenvm_rl.rl.tasks import OPPOSITES, answer_sentence_end, opposites_dataset, opposites_reward, opposites_split

    assert len(OPPOSITES) >= 120
    train, held_out = opposites_split()
    assert len(held_out) == 48 and not set(train) & set(held_out) and len(train) + 48 == len(OPPOSITES)
    texts = [
        "The opposite of 'hot' is 'cold'. Cold is...",
        "Cold.",
        "Hot: a cold feeling",
        "Warm, or cold.",
        "The opposite of hot would be cold.",
        "The word hot means... Its opposite is chilly!",
    ]
    assert opposites_reward(texts, word=["hot"] * 6, answer=[OPPOSITES["hot"].split()] * 6) == [1, 1, 1, 0, 0, 1]
    # The first stated answer counts, and only it; aliases are accepted ("light" -> "darkness").
    assert opposites_reward(
        ["The opposite of light is darkness, not heavy"], word=["light"], answer=[OPPOSITES["light"].split()]
    ) == [1.0]
    assert answer_sentence_end(texts[0], "hot") == len("The opposite of 'hot' is 'cold'.")
    row = opposites_dataset(["hot"])[0]
    assert row["word"] == "hot" and "'hot'" in row["prompt"][0]["content"] and "cold" in row["answer"]
