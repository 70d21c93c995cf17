"""The `relative` length term: group statistics, gate, invariances, and its errors."""

import pytest
import torch

from lenvm_rl import returns as R

G = 0.9


def _batch(lengths, seed=0, T=None):
    T = T or max(lengths)
    torch.manual_seed(seed)
    values = -torch.rand(len(lengths), T + 1, dtype=torch.float64) * 0.9
    mask = torch.zeros(len(lengths), T)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return values, mask, torch.ones(len(lengths), dtype=torch.bool)


def _term(values, mask, terminated, correct, group_size, lam=0.8, alpha=1.0, clip=0.5):
    credit = R.length_credit(values, mask, terminated, G, lam) * mask
    mu, gate = R.correct_group_means(credit.sum(-1), mask.sum(-1), correct, group_size)
    return R.relative_length_term(credit, mask, mu, gate, alpha, clip), gate


def test_group_sums_are_zero_before_clipping_and_wrong_rows_get_nothing():
    values, mask, term = _batch([3, 7, 5, 2, 6, 4, 8, 1])
    correct = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    out, gate = _term(values, mask, term, correct, group_size=4, clip=1e9)
    for g in range(2):
        rows = slice(4 * g, 4 * g + 4)
        assert abs(float((out[rows] * correct[rows, None]).sum())) < 1e-9
    assert torch.all(out[~correct] == 0)
    assert gate.tolist() == correct.tolist()
    clipped, _ = _term(values, mask, term, correct, group_size=4, alpha=100.0, clip=0.5)
    assert clipped.abs().max() <= 0.5 + 1e-12 and clipped.abs().max() == pytest.approx(0.5)


def test_a_lone_correct_answer_gets_no_term():
    values, mask, term = _batch([3, 7, 5, 2])
    correct = torch.tensor([0, 1, 0, 0], dtype=torch.bool)
    out, gate = _term(values, mask, term, correct, group_size=4)
    assert not gate.any() and torch.all(out == 0)


def test_a_constant_offset_in_the_critic_changes_nothing_at_lambda_one():
    values, mask, term = _batch([3, 7, 5, 2, 6, 4, 8, 1], seed=1)
    correct = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    base, _ = _term(values, mask, term, correct, 4, lam=1.0, clip=1e9)
    shifted, _ = _term(values - 0.05, mask, term, correct, 4, lam=1.0, clip=1e9)
    assert torch.allclose(base, shifted, atol=1e-9)
    # ...but the plain advantage mode moves by the offset: the term `relative` removes.
    a = R.length_credit(values, mask, term, G, 1.0)
    b = R.length_credit(values - 0.05, mask, term, G, 1.0)
    assert torch.allclose((b - a)[mask.bool()], torch.full_like(a[mask.bool()], 0.05))


def test_shorter_correct_answers_get_positive_credit():
    # A critic that expects 6 tokens everywhere: the 2-token answer beat it, the 10-token one fell behind.
    lengths = [2, 10, 6, 6]
    T = max(lengths)
    values = torch.zeros(4, T + 1, dtype=torch.float64)
    for i, n in enumerate(lengths):
        values[i, :n] = -(1 - G**6)
    mask = torch.zeros(4, T)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    out, _ = _term(values, mask, torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool), 4, lam=1.0)
    per_token = out.sum(-1) / mask.sum(-1)
    assert per_token[0] > 0 > per_token[1]


def test_groups_must_be_whole():
    with pytest.raises(ValueError, match="prompt groups"):
        R.correct_group_means(torch.zeros(6), torch.ones(6), torch.ones(6, dtype=torch.bool), 4)


def test_config_errors():
    from lenvm_rl.rl import LengthShapedGRPOConfig

    with pytest.raises(ValueError, match="length_gate_reward"):
        LengthShapedGRPOConfig(output_dir="x", use_cpu=True)
    with pytest.raises(ValueError, match="telescopes"):
        LengthShapedGRPOConfig(output_dir="x", use_cpu=True, length_shaping="potential")
    with pytest.raises(ValueError, match="at least 2 generations"):
        LengthShapedGRPOConfig(
            output_dir="x",
            use_cpu=True,
            length_gate_reward="r",
            num_generations=1,
            per_device_train_batch_size=1,
            generation_batch_size=1,
        )
    cfg = LengthShapedGRPOConfig(output_dir="x", use_cpu=True, length_gate_reward="r")
    assert (cfg.length_coef, cfg.length_gae_lambda, cfg.length_clip) == (1.0, 0.8, 0.5)
    assert LengthShapedGRPOConfig(output_dir="x", use_cpu=True, length_shaping="advantage").length_coef == 0.1


def test_a_gate_that_is_not_a_reward_function_is_refused(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    from datasets import Dataset

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.modeling import LengthValueModel
    from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer

    def task_reward(completions, **kwargs):
        return [1.0] * len(completions)

    args = LengthShapedGRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        report_to=[],
        length_gate_reward="accuracy_reward",
    )
    with pytest.raises(ValueError, match="not among the reward functions.*task_reward"):
        LengthShapedGRPOTrainer(
            model=str(tiny_causal_dir),
            reward_funcs=task_reward,
            args=args,
            train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4),
            processing_class=tokenizer,
            critic=LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer),
        )


def _trainer_stub(bootstrap: bool, rewards, group_size: int):
    """What `LengthShapedGRPOTrainer._length_term` reads of the trainer, for one process."""
    from types import SimpleNamespace

    from lenvm_rl.rl.trainer import LengthShapedGRPOTrainer

    args = SimpleNamespace(
        bootstrap_truncated=bootstrap,
        length_shaping="relative",
        length_gae_lambda=1.0,
        length_gate_threshold=0.5,
        length_coef=1.0,
        length_clip=1e9,
    )
    accelerator = SimpleNamespace(gather=lambda x: x, process_index=0)
    stub = SimpleNamespace(
        args=args,
        accelerator=accelerator,
        length_gamma=G,
        _gathered_rewards=torch.as_tensor(rewards, dtype=torch.float32)[:, None],
        _gate_index=0,
        num_generations=group_size,
        model=SimpleNamespace(training=True),
    )
    stub._relative_term = lambda credit, mask: LengthShapedGRPOTrainer._relative_term(stub, credit, mask)
    return lambda *a: LengthShapedGRPOTrainer._length_term(stub, *a)


def test_unbootstrapped_truncated_rows_are_out_of_the_gate_the_mean_and_the_term():
    """bootstrap_truncated=False: a truncated correct row gets no term and does not move its group's mean (it used
    to stay in C_g with zero credit, so it diluted mu_g and got clip(-alpha mu_g) on every token)."""
    values, mask, _ = _batch([3, 5, 6, 4], seed=2)
    terminated = torch.tensor([True, True, False, True])
    rewards = [1.0, 1.0, 1.0, 0.0]  # rows 0-2 correct; row 2 truncated; row 3 wrong
    term, gate = _trainer_stub(False, rewards, 4)(values, mask, mask, terminated)
    assert gate.tolist() == [True, True, False, False]
    assert torch.all(term[2] == 0) and torch.all(term[3] == 0)
    # The group statistics are those of the two finished correct rows alone.
    expected, _ = _term(values, mask, terminated, torch.tensor([1, 1, 0, 0], dtype=torch.bool), 4, 1.0, 1.0, 1e9)
    assert torch.allclose(term, expected.float(), atol=1e-6)
    assert abs(float(term.sum())) < 1e-5  # sums to zero over the gated rows
    # With one finished correct row left, nothing is compared: no term at all.
    term, gate = _trainer_stub(False, [1.0, 0.0, 1.0, 0.0], 4)(values, mask, mask, terminated)
    assert not gate.any() and torch.all(term == 0)
    # Bootstrapped (the default), the truncated correct row takes part.
    term, gate = _trainer_stub(True, rewards, 4)(values, mask, mask, terminated)
    assert gate.tolist() == [True, True, True, False] and term[2].abs().sum() > 0
