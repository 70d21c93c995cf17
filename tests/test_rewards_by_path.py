"""Every length reward by dotted path, as `trl grpo` / `trl rloo` recipes name them, configured by the recipe's
`env:`; TRL's EOS ids reaching the critic reward; and TRL's own GRPO script running them on a tiny model."""

import importlib
import json
import subprocess
import sys

import pytest
import torch
import yaml

from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.rl import rewards
from lenvm_rl.rl.tasks import opposites_prompt

GAMMA = 0.9
OTHER_EOS = 7  # a second EOS id of the policy (as Qwen's <|endoftext|> beside <|im_end|>), unknown to the critic
BASELINES = [
    "kimi_length_reward",
    "l1_max_length_reward",
    "lenvm_seq_reward",
    "gated_critic_length_return",
    "soft_overlong_reward",
    "critic_length_return",
    "group_length_reward",
]


class FakeTrainer:
    """What a reward sees of TRL's trainer: its ``log_metric`` method, on an object holding ``eos_token_ids``."""

    def __init__(self, eos_token_ids):
        self.eos_token_ids = eos_token_ids

    def _log_metric(self, name, value):
        pass


@pytest.fixture
def recipe_env(tmp_path, tiny_backbone, tokenizer, monkeypatch):
    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=GAMMA).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    rewards._load_critic.cache_clear()
    env = {
        "LENVM_CRITIC_PATH": str(ckpt),
        "LENVM_GATE_REWARD": "opposites",
        "LENVM_SEQ_BETA": "2.0",
        "LENVM_L1_BUDGET": "4",
        "LENVM_OVERLONG_MAX_LENGTH": "6",
        "LENVM_OVERLONG_CACHE": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    rewards._load_critic.cache_clear()


def _trl_call(tokenizer):
    """One group of four completions of one prompt, as TRL's GRPO passes them to a reward function."""
    eos = tokenizer.eos_token_id
    prompts = [opposites_prompt("hot")] * 4
    texts = ["Cold.", "Cold, of course.", "Warm.", "The opposite of hot is cold, surely"]
    kwargs = dict(
        prompts=prompts,
        completions=[[{"role": "assistant", "content": t}] for t in texts],
        # answers of 1, 2, 2 and 5 tokens: ended on EOS, ended on the policy's other EOS, cut, cut
        completion_ids=[[5, eos], [5, 6, OTHER_EOS], [5, 6], [5, 6, 8, 9, 10]],
        word=["hot"] * 4,
        answer=[["cold", "cool"]] * 4,
        trainer_state=None,
        log_extra=lambda *a, **k: None,
        log_metric=FakeTrainer([eos, OTHER_EOS])._log_metric,
    )
    return kwargs


def record_eos(completion_ids, **kwargs):
    """A reward that writes the EOS ids a reward function finds in TRL's call to ``$RECORD_EOS_FILE`` (TRL imports
    it by dotted path, as a module apart from the one pytest collected)."""
    import os

    with open(os.environ["RECORD_EOS_FILE"], "a") as f:
        f.write(json.dumps(sorted(rewards.policy_eos_token_ids(kwargs) or [])) + "\n")
    return [0.0] * len(completion_ids)


def _by_path(name):
    return getattr(importlib.import_module("lenvm_rl.rl.rewards"), name)


def test_every_baseline_by_dotted_path_takes_trls_call(recipe_env, tokenizer):
    call = _trl_call(tokenizer)
    out = {name: _by_path(name)(**call) for name in BASELINES}
    # Kimi: lambda = 0.5 - (L - 1) / 4 over answer lengths 1, 2, 2, 5; the wrong third gets min(0, lambda).
    assert out["kimi_length_reward"] == pytest.approx([0.5, 0.25, 0.0, -0.5])
    # L1-Max, budget 4 (LENVM_L1_BUDGET): c * clip(0.5 + (4 - L) / 8, 0, 1).
    assert out["l1_max_length_reward"] == pytest.approx([0.875, 0.75, 0.0, 0.375])
    # DAPO (TRL's): max 6, cache 2, over generated tokens (EOS included, as TRL's cap counts them): 2, 3, 2, 5.
    assert out["soft_overlong_reward"] == pytest.approx([0.0, 0.0, 0.0, -0.5])
    # The critic's return: both EOS ids end an answer (no bootstrap); the cut rows bootstrap with V(s_n).
    critic = rewards.critic_from_env()
    assert critic.gamma == GAMMA
    ret = out["critic_length_return"]
    assert ret[0] == pytest.approx(-(1 - GAMMA**2)) and ret[1] == pytest.approx(-(1 - GAMMA**3))
    from lenvm_rl.data import encode_prompt

    for i in (2, 3):
        ids = call["completion_ids"][i]
        v = critic.values(torch.tensor([encode_prompt(tokenizer, call["prompts"][i]) + ids]))[0, -1].item()
        assert ret[i] == pytest.approx(-(1 - GAMMA ** len(ids)) + GAMMA ** len(ids) * v, rel=1e-5)
    # lenvm_seq: c * beta * R with beta 2 (LENVM_SEQ_BETA) and the opposites gate; the old name is the same reward.
    assert out["lenvm_seq_reward"] == pytest.approx([2 * ret[0], 2 * ret[1], 0.0, 2 * ret[3]])
    assert out["gated_critic_length_return"] == out["lenvm_seq_reward"]
    assert out["group_length_reward"] == pytest.approx([0.5, 0.25, 0.25, -0.5])


def test_trls_eos_ids_reach_the_critic_reward(recipe_env, tokenizer):
    """A completion ending on the policy's other EOS id is finished: the critic, whose checkpoint does not know
    that id, must not bootstrap it as truncated."""
    call = _trl_call(tokenizer)
    prompts, ids = call["prompts"][1:2], call["completion_ids"][1:2]
    with_trainer = rewards.critic_length_return(prompts, ids, log_metric=call["log_metric"])
    without = rewards.critic_length_return(prompts, ids)
    assert with_trainer == [pytest.approx(-(1 - GAMMA**3))]
    assert without != with_trainer  # the critic alone does not know id 7: it bootstraps (a different number)
    explicit = rewards.critic_length_return(prompts, ids, eos_token_ids=[OTHER_EOS])
    assert explicit == with_trainer


def test_a_missing_setting_names_its_flag_and_variable(recipe_env, tokenizer, monkeypatch):
    monkeypatch.delenv("LENVM_L1_BUDGET")
    with pytest.raises(ValueError, match=r"needs l1_budget \(--l1_budget for `lenvm grpo`, \$LENVM_L1_BUDGET"):
        _by_path("l1_max_length_reward")(**_trl_call(tokenizer))
    monkeypatch.setenv("LENVM_SEQ_BETA", "two")
    with pytest.raises(ValueError, match="LENVM_SEQ_BETA='two' is not a number"):
        _by_path("lenvm_seq_reward")(**_trl_call(tokenizer))


def test_lenvm_grpo_takes_reward_settings_as_flags_and_yaml_keys(tmp_path):
    from lenvm_rl import grpo_script
    from lenvm_rl.args import make_parser, parse
    from lenvm_rl.rl.reward_config import LengthRewardConfig

    parser = make_parser([LengthRewardConfig], "x")
    (flags,) = parse(parser, ["--l1_budget", "12", "--reward_gate", "addition", "--seq_beta", "0.5"])
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"l1_budget": 12, "reward_gate": "addition", "seq_beta": 0.5}))
    (keys,) = parse(parser, ["--config", str(tmp_path / "r.yaml")])
    assert flags == keys == LengthRewardConfig(l1_budget=12, reward_gate="addition", seq_beta=0.5)
    l1 = grpo_script.resolve_reward("l1_max", task=None, config=flags)
    args = dict(prompts=["p"] * 2, completions=["1 + 1 = 2", "1 + 1 = 3"], answer=["2", "2"], eos_token_ids=[0])
    assert l1(completion_ids=[[1] * 12 + [0], [1]], **args) == [0.5, 0.0]  # 12 answer tokens: the budget
    overlong = grpo_script.resolve_reward(
        "soft_overlong", config=LengthRewardConfig(overlong_max_length=4, overlong_cache=2)
    )
    assert overlong(completion_ids=[[1] * 3]) == [-0.5]
    with pytest.raises(ValueError, match="needs overlong_max_length, overlong_cache"):
        grpo_script.resolve_reward("soft_overlong")


def test_importing_a_reward_by_path_does_not_load_grpo():
    code = (
        "import json, sys\nimport lenvm_rl.rl.rewards\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('lenvm_rl', 'trl')))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "lenvm_rl.rl.trainer" not in loaded and "lenvm_rl.critic" not in loaded
    assert not [m for m in loaded if m == "trl" or m.startswith("trl.")], loaded


@pytest.mark.slow  # over ~5 s on 2 cores
def test_trls_own_grpo_script_runs_the_rewards_by_dotted_path(tmp_path, tiny_causal_dir, tiny_backbone, tokenizer):
    """`trl grpo --config recipe.yaml`, in-process: TRL's parser sets the recipe's `env:`, TRL's script imports the
    rewards by dotted path and its trainer calls them (one step of a tiny random policy)."""
    from trl import GRPOTrainer, TrlParser
    from trl.scripts.grpo import main, make_parser

    from lenvm_rl.rl.tasks import opposites_dataset

    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=GAMMA).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    rewards._load_critic.cache_clear()
    (tmp_path / "data").mkdir()
    opposites_dataset(["hot", "big"]).to_json(str(tmp_path / "data" / "train.jsonl"))
    recipe = {
        "model_name_or_path": str(tiny_causal_dir),
        "dataset_name": str(tmp_path / "data"),
        "reward_funcs": ["lenvm_rl.rl.tasks.opposites_reward", "tests.test_rewards_by_path.record_eos"]
        + [f"lenvm_rl.rl.rewards.{n}" for n in BASELINES],
        "env": {
            "LENVM_CRITIC_PATH": str(ckpt),
            "LENVM_GATE_REWARD": "opposites",
            "LENVM_L1_BUDGET": "4",
            "LENVM_OVERLONG_MAX_LENGTH": "6",
            "LENVM_OVERLONG_CACHE": "2",
            "RECORD_EOS_FILE": str(tmp_path / "eos.jsonl"),
        },
        "use_cpu": True,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 6,
        "max_steps": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    parser = make_parser()
    assert isinstance(parser, TrlParser)
    import os

    before = {k: os.environ.get(k) for k in recipe["env"]}
    logged, trainer_eos = {}, []
    save_model = GRPOTrainer.save_model

    def keep_logs(self, *a, **k):
        logged.update(self.state.log_history[0])
        trainer_eos.append(frozenset(self.eos_token_ids))

    try:
        GRPOTrainer.save_model = keep_logs
        main(*parser.parse_args_and_config(["--config", str(tmp_path / "r.yaml")]))
    finally:
        GRPOTrainer.save_model = save_model
        for k, v in before.items():  # TRL's parser wrote the recipe's env: into os.environ
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        rewards._load_critic.cache_clear()
    for name in BASELINES:
        value = logged[f"rewards/{name}/mean"]
        assert value == value, name  # every reward ran and gave a number (NaN would mean it returned None)
    assert -1.0 <= logged["rewards/critic_length_return/mean"] <= 0.0
    # The rewards saw the EOS ids TRL's trainer stops on (through its log_metric argument).
    seen = [frozenset(json.loads(line)) for line in (tmp_path / "eos.jsonl").read_text().splitlines()]
    assert seen and all(ids == trainer_eos[0] for ids in seen) and tokenizer.eos_token_id in trainer_eos[0]
    assert 0.0 <= logged["rewards/l1_max_length_reward/mean"] <= 1.0
