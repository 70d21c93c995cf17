"""Every `lenvm` subcommand parses documented dataclasses with TRL's TrlParser: --help lists each field with its
help text, --config YAML works, the old dashed spellings parse to the same values, and `lenvm grpo` takes its
rewards from the registry in lenvm_rl.rl.rewards."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from lenvm_rl import cli, grpo_script
from lenvm_rl.cli import GenerateArguments, MergeArguments, PredictArguments, RolloutsArguments, main
from lenvm_rl.evaluation.common import EvalArguments, parse_args
from lenvm_rl.evaluation.length_prediction import LengthPredictionArguments
from lenvm_rl.evaluation.length_tokens import LengthTokensArguments
from lenvm_rl.evaluation.tradeoff import TradeoffArguments
from lenvm_rl.evaluation.visualize import VisualizeArguments

OURS = {
    ("rollouts",): RolloutsArguments,
    ("predict",): PredictArguments,
    ("generate",): GenerateArguments,
    ("merge",): MergeArguments,
    ("eval", "length_prediction"): LengthPredictionArguments,
    ("eval", "tradeoff"): TradeoffArguments,
    ("eval", "length_tokens"): LengthTokensArguments,
    ("eval", "visualize"): VisualizeArguments,
}


def _squash(text: str) -> str:
    return "".join(text.split())  # argparse re-wraps help text (also at hyphens)


def _own_fields(cls) -> list[dataclasses.Field]:
    """Fields declared by ``cls`` itself (not inherited from TrainingArguments / GRPOConfig)."""
    return [f for f in dataclasses.fields(cls) if f.name in vars(cls).get("__annotations__", {})]


def _documented(command) -> list[dataclasses.Field]:
    from lenvm_rl.quickstart import QuickstartConfig
    from lenvm_rl.rl.config import LengthShapedGRPOConfig
    from lenvm_rl.trainer import LengthValueConfig

    if command in OURS:
        return dataclasses.fields(OURS[command])
    return {
        ("quickstart",): dataclasses.fields(QuickstartConfig),
        ("train",): [*dataclasses.fields(cli.TrainScriptArguments), *_own_fields(LengthValueConfig)],
        ("grpo",): _own_fields(LengthShapedGRPOConfig),
    }[command]


@pytest.mark.parametrize("command", [*OURS, ("quickstart",), ("train",), ("grpo",)], ids=" ".join)
def test_help_lists_every_field_with_its_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lenvm {' '.join(command)}") and "--config" in out
    fields = _documented(command)
    assert fields
    for f in fields:
        assert f"--{f.name}" in out, f.name
        if command in OURS or command == ("quickstart",) or f.metadata.get("help"):
            assert f.metadata.get("help"), f"{f.name} has no help text"
            assert _squash(f.metadata["help"].replace("%%", "%")) in _squash(out), f.name


def _value(name: str, tp, default) -> list[str]:
    """Command-line values for a field of type ``tp`` (not its default, so the parse is seen)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return [args[-1]]
    if origin is list:
        return [f"{name} one", f"{name} two"]
    return {bool: [str(default is not True).lower()], int: ["3"], float: ["0.5"], str: [f"{name}-value"]}[tp]


@pytest.mark.parametrize("command", list(OURS), ids=" ".join)
def test_dashed_spellings_parse_to_the_same_values(command):
    cls = OURS[command]
    hints = typing.get_type_hints(cls)
    underscore, dashed = [], []
    for f in dataclasses.fields(cls):
        values = _value(f.name, hints[f.name], f.default)
        underscore += [f"--{f.name}", *values]
        dashed += [f"--{f.name.replace('_', '-')}", *values]
    parser = cli.make_parser([cls], "lenvm test")
    (a,) = cli.parse(parser, underscore)
    (b,) = cli.parse(parser, dashed)
    assert a == b
    for f in dataclasses.fields(cls):  # every value came from the command line
        assert getattr(a, f.name) != f.default, f.name


def test_legacy_command_lines():
    parser = cli.make_parser([RolloutsArguments], "lenvm rollouts")
    (a,) = cli.parse(parser, ["--output", "r.jsonl", "--no-chat-template", "--num-samples", "2", "--top-p", "0.9"])
    assert (a.use_chat_template, a.num_generations, a.top_p) == (False, 2, 0.9)
    (a,) = cli.parse(parser, ["--output", "r.jsonl", "--no_use_chat_template"])
    assert a.use_chat_template is False
    # A repeated option collects, wherever the repeats are; prompts may look like negative numbers or hold spaces.
    parser = cli.make_parser([GenerateArguments], "lenvm generate")
    (g,) = cli.parse(
        parser,
        ["--critic", "c", "--prompt", "A", "--target-tokens", "5", "--prompt", "-5", "B C", "--greedy", "--prompt=D"],
    )
    assert g.prompt == ["A", "-5", "B C", "D"] and g.target_tokens == 5 and g.greedy is True
    (g,) = cli.parse(parser, ["--critic", "c", "--prompt", "A", "B"])
    assert g.prompt == ["A", "B"] and not g.greedy
    with pytest.raises(SystemExit):  # still required
        cli.parse(parser, ["--critic", "c"])


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text(
        yaml.safe_dump(
            {"critic": "ckpt", "prompt": ["Hi", "Bye"], "mode": "at_most", "target_tokens": 8, "rule": "extreme"}
        )
    )
    (g,) = cli.parse(
        cli.make_parser([GenerateArguments], "lenvm generate"), ["--config", str(path), "--target-tokens", "5"]
    )  # the command line wins
    assert (g.critic, g.prompt, g.mode, g.target_tokens, g.rule) == ("ckpt", ["Hi", "Bye"], "at_most", 5, "extreme")
    path.write_text(yaml.safe_dump({"tiny": True, "budgets": "4,8", "top_p": 0.5}))
    t = parse_args(TradeoffArguments, "tradeoff", "test", ["--config", str(path), "--seed", "3"])
    assert (t.tiny, t.budgets, t.top_p, t.seed, t.output_dir) == (True, "4,8", 0.5, 3, "lenvm_runs/eval/tradeoff")
    assert isinstance(t, EvalArguments)


@pytest.fixture
def tiny_critic(tiny_backbone, tokenizer, tmp_path):
    from lenvm_rl.modeling import LengthValueModel

    ckpt = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.95).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    return ckpt


def test_predict_and_generate_from_config(tiny_critic, tiny_causal_dir, tmp_path, capsys):
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump({"critic": str(tiny_critic), "prompt": ["Say hi.", "Write a poem."]}))
    assert main(["predict", "--config", str(path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "tokens" in x]
    assert len(lines) == 2 and "Write a poem." in lines[1]
    path = tmp_path / "generate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "critic": str(tiny_critic),
                "model": str(tiny_causal_dir),
                "prompt": ["Hi"],
                "mode": "at_most",
                "target_tokens": 8,
                "max_new_tokens": 16,
            }
        )
    )
    assert main(["generate", "--config", str(path), "--target_tokens", "4"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert int(last.strip("[]").split()[0]) <= 4


# ------------------------------------------------------------------------------------------ grpo rewards and data
def test_resolve_reward_uses_the_registry():
    from lenvm_rl.rl import rewards, tasks

    assert grpo_script.resolve_reward("addition_reward") is tasks.addition_reward
    assert grpo_script.resolve_reward("gsm8k_reward") is tasks.gsm8k_reward
    assert (
        grpo_script.resolve_reward("opposites_reward")
        is grpo_script.resolve_reward("opposites")
        is tasks.opposites_reward
    )
    assert grpo_script.resolve_reward("critic_length_return") is rewards.critic_length_return
    assert grpo_script.resolve_reward("group_length_reward") is rewards.group_length_reward
    assert grpo_script.resolve_reward("lenvm_rl.rl.tasks.opposites_reward") is tasks.opposites_reward  # dotted path
    assert grpo_script.resolve_reward("think_format_reward").__name__ == "think_format_reward"  # TRL's own
    kimi = grpo_script.resolve_reward("kimi", task=grpo_script.builtin_task("lenvm:opposites"))
    assert kimi.__name__ == "kimi_length_reward"
    assert kimi(
        prompts=["p", "p"],
        completions=["cold", "It is hot today, is it not"],
        completion_ids=[[1], [1, 2]],
        word=["hot", "hot"],
        answer=[["cold"], ["cold"]],
    ) == [0.5, -0.5]
    with pytest.raises(ValueError, match="gated"):
        grpo_script.resolve_reward("kimi")  # no task to gate with
    with pytest.raises(ValueError, match="needs l1_budget"):
        grpo_script.resolve_reward("l1_max", task="opposites")  # `lenvm grpo --reward_funcs l1_max` without --l1_budget
    with pytest.raises(ValueError, match="unknown reward 'nonsense'"):
        grpo_script.resolve_reward("nonsense")


def test_builtin_opposites_dataset_uses_training_words_only():
    from lenvm_rl.rl.tasks import opposites_split

    train_words, eval_words = opposites_split()
    data = grpo_script.builtin_dataset("lenvm:opposites", "train", seed=0)["train"]
    assert sorted(data["word"]) == train_words and not set(data["word"]) & set(eval_words)
    assert {"prompt", "word", "answer"} <= set(data.column_names)
    assert len(grpo_script.builtin_dataset("lenvm:addition", "train", seed=0)["train"]) > 0
    assert grpo_script.builtin_dataset("some/dataset", "train", seed=0) is None
    assert (grpo_script.builtin_task("lenvm:addition"), grpo_script.builtin_task("some/dataset")) == ("addition", None)


@pytest.mark.slow  # over ~5 s on 2 cores
def test_lenvm_grpo_on_the_opposites_task(tiny_critic, tiny_causal_dir, tmp_path):
    from tests.conftest import REPO

    recipe = yaml.safe_load((REPO / "recipes/SmolLM2-135M-Instruct/grpo/config_demo.yaml").read_text())
    recipe.update(
        model_name_or_path=str(tiny_causal_dir),
        critic_model_path=str(tiny_critic),
        max_steps=1,
        dataset_name="lenvm:opposites",
        reward_funcs=["opposites_reward", "kimi", "l1_max", "soft_overlong"],
        l1_budget=8,  # the reward settings as YAML keys (the gate: the built-in dataset's task)
        overlong_cache=2,  # its max defaults to max_completion_length
        length_gate_reward="opposites_reward",
        per_device_train_batch_size=4,
        max_completion_length=8,
        bf16=False,
        output_dir=str(tmp_path / "policy"),
    )
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["grpo", "--config", str(tmp_path / "r.yaml")]) == 0
    assert (tmp_path / "policy" / "model.safetensors").is_file()


def test_a_quickstart_model_stamped_before_a_field_existed_is_reused_only_at_that_fields_default():
    from lenvm_rl.quickstart import QuickstartConfig

    old_stamp = {k: v for k, v in QuickstartConfig().training_key().items() if k != "freeze_layers"}
    assert QuickstartConfig().trained_with_same_settings(old_stamp)
    assert not QuickstartConfig(freeze_layers=20).trained_with_same_settings(old_stamp)
    assert not QuickstartConfig(learning_rate=3e-4).trained_with_same_settings(old_stamp)
    assert not QuickstartConfig().trained_with_same_settings({**old_stamp, "retired_field": 1})


def test_a_quickstart_folder_trained_with_other_settings_names_them(tmp_path):
    import json

    from lenvm_rl.quickstart import QuickstartConfig, _settings_diff

    stamp = tmp_path / "quickstart_config.json"
    assert _settings_diff(QuickstartConfig(), stamp) == ""  # no stamp: nothing to name
    stamp.write_text(json.dumps({**QuickstartConfig(train_samples=1).training_key()}))
    assert _settings_diff(QuickstartConfig(), stamp) == " (train_samples: 1 there, 2 now)"
    assert _settings_diff(QuickstartConfig(train_samples=1), stamp) == ""


def test_a_quickstart_config_rebuilt_from_its_report(tmp_path):
    import json

    from lenvm_rl.quickstart import QuickstartConfig, finished_report

    cfg = QuickstartConfig(output_dir=str(tmp_path), train_samples=1, seed=3)
    report = {"config": {**cfg.training_key(), "output_dir": str(tmp_path), "retired_field": 1}, "gamma": 0.98}
    report["config"].pop("freeze_layers")  # a report written before the field existed
    rebuilt = QuickstartConfig.from_report(report)
    assert rebuilt.seed == 3 and rebuilt.train_samples == 1 and rebuilt.freeze_layers == 0
    assert finished_report(cfg) is None  # no metrics.json yet
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    assert finished_report(cfg) is None  # a field this version lacks: another run, as for the model's reuse
    report["config"].pop("retired_field")
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    assert finished_report(cfg) == report
    assert finished_report(QuickstartConfig(output_dir=str(tmp_path), seed=3)) is None  # train_samples differs
    # the field the report lacks counts at its default, so another value does not match
    assert (
        finished_report(QuickstartConfig(output_dir=str(tmp_path), train_samples=1, seed=3, freeze_layers=20)) is None
    )
