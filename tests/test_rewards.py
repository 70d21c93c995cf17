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
    assert out[0] == pytest.approx(-(1 - 0.9 ** 3))
    critic = rewards.critic_from_env()
    from lenvm_rl.data import encode_prompt
    v = critic.values(torch.tensor([encode_prompt(tokenizer, prompts[1]) + [5, 6, 7]]))[0, -1].item()
    assert out[1] == pytest.approx(-(1 - 0.9 ** 3) + 0.9 ** 3 * v, rel=1e-5)
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
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "x", "output_dir": str(tmp_path / "o"), "use_cpu": True,
                                      "reward_funcs": ["lenvm_rl.rl.rewards.group_length_reward"],
                                      "env": {"LENVM_CRITIC_PATH": "some/ckpt"}}))
    script_args, *_ = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(recipe)])
    import importlib

    module, name = script_args.reward_funcs[0].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is rewards.group_length_reward
    import os
    assert os.environ["LENVM_CRITIC_PATH"] == "some/ckpt"
