"""critic_refresh: targets, a falling error on a toy, trainer wiring, group-sum-zero, bad input, two processes."""

import copy

import pytest
import torch
from datasets import Dataset

from lenvm_rl.critic import LengthCritic
from lenvm_rl.data import IGNORE_INDEX
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.returns import value_to_remaining
from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
from lenvm_rl.rl.trainer import refresh_critic, refresh_targets, refreshed_parameters

N = IGNORE_INDEX


def test_targets_are_pretrainings_exact_and_censored_counts():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    labels, bounds = refresh_targets(mask, torch.tensor([True, False]))
    # Row 0 ended after 3 tokens (EOS included): 3, 2, 1 to come at s_0..s_2 and 0 at its EOS.
    assert labels.tolist() == [[3, 2, 1, 0, N], [N] * 5]
    # Row 1 was cut after 2 tokens: at s_j at least 2 - j + 1 tokens were still to come.
    assert bounds.tolist() == [[N] * 5, [3, 2, 1, N, N]]


def toy_batch(tokenizer, lengths, cut=(), seed=0):
    """Left-padded prompts + right-padded completions of the given lengths (EOS last unless the row is cut)."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1000, 1015, (len(lengths), 3), generator=g)
    width = max(lengths)
    completion = torch.full((len(lengths), width), tokenizer.pad_token_id)
    cmask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        completion[i, :n] = torch.randint(1000, 1015, (n,), generator=g)
        if i not in cut:
            completion[i, n - 1] = tokenizer.eos_token_id
        cmask[i, :n] = 1
    ended = torch.tensor([i not in cut for i in range(len(lengths))])
    ids = torch.cat([prompts, completion], 1)
    mask = torch.cat([torch.ones_like(prompts), cmask], 1)
    return ids, mask, cmask, ended


def prompt_error(model, ids, mask, lengths, gamma):
    with torch.no_grad():
        v0 = model(input_ids=ids, attention_mask=mask).value[:, 2]
    return float((value_to_remaining(v0, gamma) - torch.tensor(lengths, dtype=torch.float64)).abs().mean())


def test_refresh_lowers_the_critics_error_at_the_prompt(tiny_backbone, tokenizer):
    gamma = 0.9
    model = LengthValueModel(tiny_backbone, gamma=gamma)
    lengths = [2, 3, 2, 3, 2, 2]  # the policy now writes 2-3 tokens; the fresh critic predicts something else
    ids, mask, cmask, ended = toy_batch(tokenizer, lengths)
    before = prompt_error(model, ids, mask, lengths, gamma)
    head_before = copy.deepcopy(model.v_head.state_dict())
    layer_before = copy.deepcopy(model.backbone.layers[0].state_dict())
    opt = torch.optim.AdamW(refreshed_parameters(model), lr=3e-2, weight_decay=0.0)
    losses = refresh_critic(model, opt, ids, mask, 3, cmask, ended, gamma, steps=30, chunk=4)
    after = prompt_error(model, ids, mask, lengths, gamma)
    assert losses[-1] < 0.5 * losses[0]
    assert after < 0.5 * before, (before, after)
    assert any(not torch.equal(a, b) for a, b in zip(head_before.values(), model.v_head.state_dict().values()))
    # The head only: the backbone did not move.
    assert all(torch.equal(a, b) for a, b in zip(layer_before.values(), model.backbone.layers[0].state_dict().values()))


def test_censored_rows_only_push_values_down(tiny_backbone, tokenizer):
    gamma = 0.5
    model = LengthValueModel(tiny_backbone, gamma=gamma)
    ids, mask, cmask, ended = toy_batch(tokenizer, [3, 3], cut=(0, 1))
    with torch.no_grad():
        v0 = model(input_ids=ids, attention_mask=mask).value[:, 2:].clone()
    opt = torch.optim.SGD(refreshed_parameters(model), lr=0.5)
    refresh_critic(model, opt, ids, mask, 3, cmask, ended, gamma, steps=1)
    with torch.no_grad():
        v1 = model(input_ids=ids, attention_mask=mask).value[:, 2:]
    bound = -(1 - gamma ** torch.tensor([4.0, 3.0, 2.0, 1.0]))
    violated = v0 > bound  # positions whose value claims fewer tokens than the cut row proves
    assert violated.any()
    assert float((v1 - v0)[cmask.new_ones(2, 4).bool()].sum()) <= 1e-6  # no value rose on the whole


def test_top_layers_and_lora_are_refreshed_when_asked(tiny_backbone):
    model = LengthValueModel(tiny_backbone, gamma=0.9)
    params = {id(p) for p in refreshed_parameters(model, top_layers=1)}
    assert all(id(p) in params for p in model.backbone.layers[1].parameters())
    assert not any(id(p) in params for p in model.backbone.layers[0].parameters())
    with pytest.raises(ValueError, match="has 2 layers"):
        refreshed_parameters(model, top_layers=3)


def short_reward(completions, **kwargs):
    return [1.0 if len(c) < 20 else 0.0 for c in completions]


class Recording(LengthShapedGRPOTrainer):
    terms = []

    def _relative_term(self, credit, mask):
        term, gate = super()._relative_term(credit, mask)
        Recording.terms.append((term, self._gathered_rewards[:, self._gate_index].clone()))
        return term, gate


def _config(tmp_path, **kw):
    return LengthShapedGRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        learning_rate=1e-4,
        **{"max_steps": 3, "temperature": 1.0, "length_gate_reward": "short_reward", "save_strategy": "no", **kw},
    )


@pytest.mark.slow  # over 2 s on the 2 cores
def test_trainer_refreshes_the_critic_logs_its_error_and_keeps_group_sums_zero(
    tiny_causal_dir, tiny_backbone, tokenizer, tmp_path
):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    head = copy.deepcopy(critic.model.v_head.state_dict())
    data = Dataset.from_list([{"prompt": f"Say {i} words."} for i in range(12)])
    Recording.terms = []
    trainer = Recording(
        model=str(tiny_causal_dir),
        reward_funcs=short_reward,
        args=_config(tmp_path, critic_refresh_steps=2, critic_refresh_learning_rate=1e-2, length_clip=1e9),
        train_dataset=data,
        processing_class=tokenizer,
        critic=critic,
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "length/term_abs_mean" in h]
    assert len(logged) == 3
    assert all("length/critic_refresh_loss_first" in h and "length/critic_refresh_loss_last" in h for h in logged)
    assert any("length/critic_prompt_abs_error" in h for h in logged)
    assert any(not torch.equal(a, b) for a, b in zip(head.values(), critic.model.v_head.state_dict().values()))
    # `relative` with a refreshed critic: before clipping the term sums to zero over each group's correct rows.
    assert len(Recording.terms) == 3
    for term, rewards in Recording.terms:
        correct = rewards >= 0.5
        for g in range(len(term) // 4):
            rows = slice(4 * g, 4 * g + 4)
            assert abs(float((term[rows] * correct[rows, None]).sum())) < 1e-5
    assert any(t.abs().sum() > 0 for t, _ in Recording.terms)


def test_a_frozen_critic_stays_frozen(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    state = copy.deepcopy(critic.model.state_dict())
    trainer = LengthShapedGRPOTrainer(
        model=str(tiny_causal_dir),
        reward_funcs=short_reward,
        args=_config(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list([{"prompt": f"Say {i} words."} for i in range(4)]),
        processing_class=tokenizer,
        critic=critic,
    )
    trainer.train()
    assert all(torch.equal(v, critic.model.state_dict()[k]) for k, v in state.items())
    assert not any("length/critic_refresh_loss_first" in h for h in trainer.state.log_history)


def test_bad_refresh_settings_are_refused_at_construction(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="critic_refresh_learning_rate=0.0"):
        _config(tmp_path, critic_refresh_steps=2, critic_refresh_learning_rate=0.0)
    with pytest.raises(ValueError, match="critic_refresh_steps must be >= 0"):
        _config(tmp_path, critic_refresh_steps=-1)
    with pytest.raises(ValueError, match="critic_refresh_layers must be >= 0"):
        _config(tmp_path, critic_refresh_steps=1, critic_refresh_layers=-1)
    assert _config(tmp_path, critic_refresh_learning_rate=0.0).critic_refresh_steps == 0  # frozen: lr unused
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<zzz_policy_only>"])
    with pytest.raises(ValueError, match="differs from the critic"):
        LengthShapedGRPOTrainer(
            model=str(tiny_causal_dir),
            reward_funcs=short_reward,
            args=_config(tmp_path, critic_refresh_steps=1),
            train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4),
            processing_class=other,
            critic=critic,
        )
    with pytest.raises(ValueError, match="has 2 layers"):
        LengthShapedGRPOTrainer(
            model=str(tiny_causal_dir),
            reward_funcs=short_reward,
            args=_config(tmp_path, critic_refresh_steps=1, critic_refresh_layers=5),
            train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4),
            processing_class=tokenizer,
            critic=critic,
        )


# ----------------------------------------------------------------------------------------- two processes
def _two_process_batch():
    """Four rows: 3 prompt tokens, completions of 5, 2, 4 and 3 tokens (the last one cut), EOS id 2."""
    g = torch.Generator().manual_seed(1)
    lengths, ended = [5, 2, 4, 3], torch.tensor([True, True, True, False])
    prompts = torch.randint(1000, 1015, (4, 3), generator=g)
    completion = torch.full((4, 5), 2)
    cmask = torch.zeros(4, 5, dtype=torch.long)
    for i, n in enumerate(lengths):
        completion[i, :n] = torch.randint(1000, 1015, (n,), generator=g)
        completion[i, n - 1] = 2 if ended[i] else completion[i, n - 1]
        cmask[i, :n] = 1
    return prompts, completion, cmask, ended


def _refreshed_state(rows, global_sum, vocab):
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    from transformers import LlamaModel

    model = LengthValueModel(LlamaModel(tiny_config(vocab)), gamma=0.9).double()  # sums in any order agree
    opt = torch.optim.AdamW(refreshed_parameters(model, top_layers=1), lr=1e-2, weight_decay=0.0)
    prompts, completion, cmask, ended = (t[rows] for t in _two_process_batch())
    width = int(cmask.sum(-1).max())  # each process pads its completions to its own longest, as GRPO does
    completion, cmask = completion[:, :width], cmask[:, :width]
    ids = torch.cat([prompts, completion], 1)
    mask = torch.cat([torch.ones_like(prompts), cmask], 1)
    losses = refresh_critic(model, opt, ids, mask, 3, cmask, ended, 0.9, steps=3, global_sum=global_sum, chunk=1)
    return {k: v.tolist() for k, v in model.state_dict().items()}, losses


def _refresh_rank(rank, path, vocab):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}.init", rank=rank, world_size=2)

    def global_sum(x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    state, losses = _refreshed_state([[0, 1], [2, 3]][rank], global_sum, vocab)
    with open(f"{path}.{rank}", "w") as f:
        json.dump({"state": state, "losses": losses}, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_refresh_to_the_weights_of_one(tmp_path, tokenizer):
    import json

    import torch.multiprocessing as mp

    vocab = len(tokenizer)
    one_state, one_losses = _refreshed_state([0, 1, 2, 3], lambda x: x, vocab)
    mp.spawn(_refresh_rank, args=(str(tmp_path / "refresh"), vocab), nprocs=2)
    ranks = [json.loads((tmp_path / f"refresh.{r}").read_text()) for r in (0, 1)]
    for got in ranks:
        assert got["losses"] == pytest.approx(one_losses, rel=1e-9)
        for key, value in one_state.items():
            assert torch.allclose(torch.tensor(got["state"][key]), torch.tensor(value), rtol=0, atol=1e-9), key
    # The refresh moved the head and the top layer, not the bottom one.
    from transformers import LlamaModel

    from tests.conftest import tiny_config

    torch.manual_seed(0)
    start = LengthValueModel(LlamaModel(tiny_config(vocab)), gamma=0.9).double().state_dict()
    moved = {k for k, v in start.items() if not torch.allclose(v, torch.tensor(one_state[k], dtype=v.dtype))}
    assert any(k.startswith("v_head") for k in moved) and any("layers.1." in k for k in moved)
    assert not any("layers.0." in k for k in moved)


class HeadAtEachBatch(LengthShapedGRPOTrainer):
    """Records the critic's head as each batch is scored (before that batch's refresh)."""

    def _generate_and_score_completions(self, inputs):
        self.heads = getattr(self, "heads", []) + [copy.deepcopy(self.critic.model.v_head.state_dict())]
        return super()._generate_and_score_completions(inputs)


@pytest.mark.slow  # two GRPO steps with checkpoints, then a resume
def test_checkpoints_keep_the_refreshed_critic_and_a_resume_restores_it(
    tiny_causal_dir, tiny_backbone, tokenizer, tmp_path
):
    data = Dataset.from_list([{"prompt": f"Say {i} words."} for i in range(8)])

    def trainer_with_fresh_critic(seed):
        torch.manual_seed(seed)  # another seed: another fresh head
        critic = LengthCritic(LengthValueModel(copy.deepcopy(tiny_backbone), gamma=0.95), tokenizer)
        args = _config(
            tmp_path,
            max_steps=2,
            save_strategy="steps",
            save_steps=1,
            critic_refresh_steps=2,
            critic_refresh_learning_rate=1e-2,
        )
        return HeadAtEachBatch(
            model=str(tiny_causal_dir),
            reward_funcs=short_reward,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            critic=critic,
        )

    def same(a, b):
        return all(torch.equal(v, b[k]) for k, v in a.items())

    first = trainer_with_fresh_critic(0)
    first.train()
    assert len(first.heads) == 2 and not same(first.heads[0], first.heads[1])  # the refresh moved the head
    ckpt = tmp_path / "grpo" / "checkpoint-1"
    assert (ckpt / "critic_refresh.pt").is_file() and (
        tmp_path / "grpo" / "checkpoint-2" / "critic_refresh.pt"
    ).is_file()

    # Resumed from step 1 with a fresh critic, step 2 is scored by the critic as refreshed through step 1.
    second = trainer_with_fresh_critic(1)
    assert not same(second.critic.model.v_head.state_dict(), first.heads[1])
    second.train(resume_from_checkpoint=str(ckpt))
    assert len(second.heads) == 1 and same(second.heads[0], first.heads[1])
    assert second._critic_optimizer.state_dict()["state"]  # the refresh optimizer's moments came back too

    # A checkpoint without the critic's state is refused rather than resumed against the unrefreshed critic.
    (ckpt / "critic_refresh.pt").unlink()
    with pytest.raises(FileNotFoundError, match="without a refreshed critic"):
        trainer_with_fresh_critic(2).train(resume_from_checkpoint=str(ckpt))
