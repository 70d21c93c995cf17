import pickle

import pytest
import torch

from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.rl import rewards


def test_group_length_reward_counts_tokens_within_each_prompt():
    prompts = ["a", "a", "a", "b", "b"]
    ids = [[1] * 10, [1] * 20, [1] * 30, [1] * 5, [1] * 5]
    assert rewards.group_length_reward(prompts=prompts, completion_ids=ids) == [0.5, 0.0, -0.5, 0.0, 0.0]


def test_critic_length_return_bootstraps_truncated_completions(tmp_path, tiny_backbone, tokenizer, monkeypatch):
    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.9).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    monkeypatch.setenv(rewards.CRITIC_ENV, str(ckpt))
    rewards._load_critic.cache_clear()
    eos = tokenizer.eos_token_id
    prompts = [[{"role": "user", "content": "hi"}]] * 2
    out = rewards.critic_length_return(prompts=prompts, completion_ids=[[5, 6, eos], [5, 6, 7]])
    assert out[0] == pytest.approx(-(1 - 0.9**3))
    critic = rewards.critic_from_env()
    from lenvm_rl.data import encode_prompt

    v = critic.values(torch.tensor([encode_prompt(tokenizer, prompts[1]) + [5, 6, 7]]))[0, -1].item()
    assert out[1] == pytest.approx(-(1 - 0.9**3) + 0.9**3 * v, rel=1e-5)
    assert pickle.loads(pickle.dumps(rewards.critic_length_return)) is rewards.critic_length_return


def test_missing_critic_path_says_what_to_set(monkeypatch):
    monkeypatch.delenv(rewards.CRITIC_ENV, raising=False)
    with pytest.raises(RuntimeError, match="LENVM_CRITIC_PATH"):
        rewards.critic_length_return(prompts=["x"], completion_ids=[[1]])


def test_reward_by_dotted_path_through_trls_parser(tmp_path, monkeypatch):
    """A recipe names our reward by dotted path; TRL's own parser and loader resolve it."""
    import yaml
    from trl import GRPOConfig, ModelConfig, TrlParser
    from trl.scripts.grpo import GRPOScriptArguments

    monkeypatch.setenv("LENVM_CRITIC_PATH", "placeholder")  # restored after the test; the parser overwrites it
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": "x",
                "output_dir": str(tmp_path / "o"),
                "use_cpu": True,
                "reward_funcs": ["lenvm_rl.rl.rewards.group_length_reward"],
                "env": {"LENVM_CRITIC_PATH": "some/ckpt"},
            }
        )
    )
    script_args, *_ = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(recipe)]
    )
    import importlib

    module, name = script_args.reward_funcs[0].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is rewards.group_length_reward
    import os

    assert os.environ["LENVM_CRITIC_PATH"] == "some/ckpt"


def _gate(completions, **kwargs):  # a task reward: "correct" when the completion says yes
    return [1.0 if "yes" in c else 0.0 for c in completions]


def test_kimi_length_reward_gates_wrong_answers_to_min_zero_lambda():
    reward = rewards.get_kimi_length_reward(_gate)
    prompts = ["p"] * 4 + ["q"] * 2
    completions = ["yes", "no", "yes", "no", "yes", "yes"]
    ids = [[1] * 2, [1] * 4, [1] * 6, [1] * 8, [1] * 3, [1] * 3]
    out = reward(prompts=prompts, completions=completions, completion_ids=ids)
    assert out == pytest.approx([0.5, 0.0, -1 / 6, -0.5, 0.0, 0.0])
    assert reward.__name__ == "kimi_length_reward"


def test_l1_max_reward_is_gated_and_clipped():
    reward = rewards.get_l1_max_length_reward(_gate, budget=10)
    out = reward(
        prompts=["p"] * 4, completions=["yes", "yes", "yes", "no"], completion_ids=[[], [1] * 10, [1] * 30, [1]]
    )
    assert out == pytest.approx([1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="budget"):
        rewards.get_l1_max_length_reward(_gate, budget=0)


def test_l1_max_budget_counts_answer_tokens_not_the_eos():
    """Lengths count answer tokens, EOS excluded (docs/method.md): 10 tokens + EOS sit exactly at the budget."""
    reward = rewards.get_l1_max_length_reward(_gate, budget=10)
    ids = [[1] * 10 + [2], [1] * 10]  # finished with EOS 2; cut after 10 tokens
    assert reward(prompts=["p"] * 2, completions=["yes"] * 2, completion_ids=ids, eos_token_ids=[2]) == [0.5, 0.5]


def _saved_critic(tmp_path, tiny_backbone, tokenizer, extra_eos=None):
    ckpt = tmp_path / "critic"
    model = LengthValueModel(tiny_backbone, gamma=0.9)
    model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    if extra_eos is not None:
        from transformers import GenerationConfig

        GenerationConfig(eos_token_id=[tokenizer.eos_token_id, extra_eos]).save_pretrained(ckpt)
    from lenvm_rl.critic import LengthCritic

    return LengthCritic.from_pretrained(ckpt, device="cpu")


def test_lenvm_seq_reward_is_the_gated_sequence_return(tmp_path, tiny_backbone, tokenizer):
    critic = _saved_critic(tmp_path, tiny_backbone, tokenizer)
    eos = tokenizer.eos_token_id
    reward = rewards.get_lenvm_seq_reward(_gate, beta=2.0, critic=critic)
    out = reward(prompts=["p", "p"], completions=["yes", "no"], completion_ids=[[5, eos], [5, 6, eos]])
    assert out == pytest.approx([2.0 * -(1 - 0.9**2), 0.0])


def test_critic_length_return_knows_every_eos_and_renders_prompts_like_trl(tmp_path, tiny_backbone, tokenizer):
    other_eos = 7
    critic = _saved_critic(tmp_path, tiny_backbone, tokenizer, extra_eos=other_eos)
    seen = []
    values = critic.values
    critic.values = lambda ids, mask=None: (
        seen.append(ids[mask.bool()].tolist() if mask is not None else ids) or values(ids, mask)
    )
    # Ending on the generation config's other EOS is a finished answer: no bootstrap, no critic call.
    out = rewards.critic_length_return(["plain prompt"], [[5, 6, other_eos]], critic=critic)
    assert out == [pytest.approx(-(1 - 0.9**3))] and not seen
    # A plain-string prompt is tokenized as it is (TRL does not apply the chat template to it) ...
    rewards.critic_length_return(["plain prompt"], [[5, 6]], critic=critic)
    assert seen[-1] == tokenizer("plain prompt", add_special_tokens=False)["input_ids"] + [5, 6]
    # ... and a conversational one through the chat template.
    from lenvm_rl.data import encode_prompt

    messages = [{"role": "user", "content": "plain prompt"}]
    rewards.critic_length_return([messages], [[5, 6]], critic=critic)
    assert seen[-1] == encode_prompt(tokenizer, messages) + [5, 6]


def test_get_reward_funcs_registry():
    from lenvm_rl.rl.reward_config import LengthRewardConfig
    from lenvm_rl.rl.tasks import opposites_reward

    funcs = rewards.get_reward_funcs(
        ["opposites", "kimi", "l1_max"], task="opposites", config=LengthRewardConfig(l1_budget=16)
    )
    assert funcs[0] is opposites_reward and [f.__name__ for f in funcs[1:]] == [
        "kimi_length_reward",
        "l1_max_length_reward",
    ]
    with pytest.raises(ValueError, match="unknown reward 'shortest'"):
        rewards.get_reward_funcs(["shortest"])
    with pytest.raises(ValueError, match="gated by a task reward"):
        rewards.get_reward_funcs(["kimi"])
    with pytest.raises(ValueError, match="needs l1_budget .--l1_budget for `lenvm grpo`, .LENVM_L1_BUDGET"):
        rewards.get_reward_funcs(["l1_max"], task="addition")


def _kimi_two_ranks(rank, path):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}.init", rank=rank, world_size=2)
    reward = rewards.get_kimi_length_reward(_gate)
    lengths = [[2, 4], [6, 8]][rank]  # one group of 4 split over the two ranks
    out = reward(prompts=["p", "p"], completions=["yes", "yes"], completion_ids=[[1] * n for n in lengths])
    with open(f"{path}.{rank}", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_group_rewards_see_whole_groups_across_processes(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_kimi_two_ranks, args=(str(tmp_path / "kimi"),), nprocs=2)
    out = [x for rank in (0, 1) for x in json.loads((tmp_path / f"kimi.{rank}").read_text())]
    assert out == pytest.approx([0.5, 1 / 6, -1 / 6, -0.5])
