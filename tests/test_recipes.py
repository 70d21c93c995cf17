"""Every recipe parses with TRL's parser into our dataclasses; the paper recipe keeps the paper's settings."""

from pathlib import Path

import pytest
from trl import ModelConfig, TrlParser

from lenvm_rl.cli import TrainScriptArguments
from lenvm_rl.launch import resolve_accelerate_config, split_launch_args
from lenvm_rl.quickstart import QuickstartConfig
from lenvm_rl.trainer import LengthValueConfig
from tests.conftest import REPO

TRAIN_RECIPES = sorted((REPO / "recipes").glob("*/lenvm/*.yaml"))


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_train_recipes_parse(recipe, monkeypatch):
    # --use_cpu only because this machine has no GPU to satisfy bf16: true
    monkeypatch.chdir(REPO)
    parser = TrlParser([TrainScriptArguments, LengthValueConfig, ModelConfig])
    script, cfg, model, remaining = parser.parse_args_and_config(
        ["--config", str(recipe), "--use_cpu", "true"], return_remaining_strings=True
    )
    launch, unknown = split_launch_args(remaining)
    assert not unknown
    assert Path(resolve_accelerate_config(launch["accelerate_config"])).is_file()
    global_batch = int(launch["num_processes"]) * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    assert (cfg.gamma, cfg.max_length, cfg.num_train_epochs, global_batch) == (0.997, 3000, 2, 1024)
    assert cfg.bf16 and cfg.lr_scheduler_type == "cosine" and script.rollouts


def test_paper_recipe_uses_zero3_and_paper_lr(monkeypatch):
    monkeypatch.chdir(REPO)
    parser = TrlParser([TrainScriptArguments, LengthValueConfig, ModelConfig])
    _, cfg, model, remaining = parser.parse_args_and_config(
        ["--config", "recipes/Qwen2.5-1.5B-Instruct/lenvm/config_full.yaml", "--use_cpu", "true"],
        return_remaining_strings=True,
    )
    assert cfg.learning_rate == 2e-5 and model.model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct"
    assert "zero3" in split_launch_args(remaining)[0]["accelerate_config"]


def test_quickstart_recipe_matches_the_built_in_defaults():
    (cfg,) = TrlParser([QuickstartConfig]).parse_args_and_config(["--config", str(REPO / "recipes/quickstart.yaml")])
    assert cfg == QuickstartConfig()


GRPO_RECIPES = sorted((REPO / "recipes").glob("*/grpo/*.yaml"))


@pytest.mark.parametrize("recipe", GRPO_RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_grpo_recipes_parse_and_name_known_rewards(recipe, monkeypatch):
    from trl import DatasetMixtureConfig
    from trl.scripts.grpo import GRPOScriptArguments

    from lenvm_rl.grpo_script import resolve_reward
    from lenvm_rl.rl import LengthShapedGRPOConfig

    monkeypatch.chdir(REPO)
    parser = TrlParser([GRPOScriptArguments, LengthShapedGRPOConfig, ModelConfig, DatasetMixtureConfig])
    script, cfg, *_, remaining = parser.parse_args_and_config(
        ["--config", str(recipe), "--use_cpu", "true"], return_remaining_strings=True
    )
    launch, unknown = split_launch_args(remaining)
    assert not unknown and cfg.critic_model_path and cfg.length_shaping in ("relative", "advantage")
    if cfg.length_shaping == "relative":  # the gate must be one of the recipe's rewards
        assert cfg.length_gate_reward in script.reward_funcs
    assert all(callable(resolve_reward(name)) for name in script.reward_funcs)
    if "accelerate_config" in launch:
        assert Path(resolve_accelerate_config(launch["accelerate_config"])).is_file()
