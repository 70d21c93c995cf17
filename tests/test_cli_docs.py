"""One flag convention (TRL's spellings, the older ones kept as aliases), `lenvm generate` sampling as the quickstart
critic was trained, and docs/cli.md generated from the argument dataclasses (so it cannot drift)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lenvm_rl import cli
from lenvm_rl.args import SPELLINGS
from lenvm_rl.cli_docs import render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_generated_from_the_dataclasses():
    assert DOCS.read_text() == render(), "docs/cli.md is stale: run `python -m lenvm_rl.cli_docs > docs/cli.md`"


def test_docs_list_every_option_with_its_spellings():
    text = render()
    assert "| `--model_name_or_path`, `--model`, `--generator` |" in text
    assert "| `--num_generations`, `--num_samples`, `--samples` | `1` | Answers sampled per prompt" in text  # tradeoff
    assert "| `--output` | required | JSONL file" in text  # rollouts writes a file: no --output_dir for it
    assert "| `--length_coef` |" in text and "`GRPOConfig`" in text  # our grpo fields, TRL's named
    assert "--per_device_train_batch_size`, " not in text  # TRL's own fields get no aliases


def _parse(command: str, argv: list[str]):
    return cli.parse(cli.command_parser(command), argv)[0]


@pytest.mark.parametrize(
    "command, base, canonical, value",
    [
        ("rollouts", ["--output", "r.jsonl"], "model_name_or_path", "gen"),
        ("rollouts", ["--output", "r.jsonl"], "num_generations", 3),
        ("rollouts", ["--output", "r.jsonl"], "generation_batch_size", 5),
        ("generate", ["--critic", "c", "--prompt", "p"], "model_name_or_path", "gen"),
        ("merge", ["--checkpoint", "c"], "output_dir", "out"),
        ("merge", ["--checkpoint", "c", "--output_dir", "o"], "overwrite_output_dir", True),
        ("demo", [], "model_name_or_path", "gen"),
        ("quickstart", [], "model_name_or_path", "gen"),  # a field still named `model`
        ("eval length_prediction", [], "num_generations", 3),  # ... `samples`
        ("eval lifebench", [], "model_name_or_path", "gen"),  # ... `generator`
        ("eval tradeoff", [], "generation_batch_size", 5),  # ... `batch_size`
        ("eval tradeoff", [], "output_dir", "out"),
    ],
)
def test_every_spelling_sets_the_same_field(command, base, canonical, value, tmp_path):
    spellings = next(g for g in SPELLINGS if canonical in g)
    parsed = set()
    for name in spellings:
        flag = [f"--{name}"] if value is True else [f"--{name}", str(value)]
        a = _parse(command, base + flag)
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({name: value}))
        b = _parse(command, base + ["--config", str(config)])
        assert a == b, name  # a YAML key may be any spelling too
        parsed.add(repr(a))
    assert len(parsed) == 1
    assert value in vars(a).values()


def test_help_shows_trls_spelling_first(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "lifebench", "--help"])
    out = capsys.readouterr().out
    assert "--model_name_or_path GENERATOR, --model GENERATOR, --generator GENERATOR" in out
    assert "--generation_batch_size BATCH_SIZE, --batch_size BATCH_SIZE" in out


def test_an_option_of_its_own_is_not_shadowed_by_an_alias():
    parser = cli.command_parser("train")  # TrainingArguments' fields keep TRL's spellings only
    assert "--batch_size" not in parser._option_string_actions
    assert parser._option_string_actions["--output_dir"].dest == "output_dir"


def test_generate_samples_as_the_quickstart_critic_was_trained():
    from lenvm_rl.candidates import candidate_settings
    from lenvm_rl.quickstart import QuickstartConfig

    g = _parse("generate", ["--critic", "c", "--prompt", "p"])
    r = _parse("rollouts", ["--output", "r.jsonl"])
    q = QuickstartConfig()
    assert (g.temperature, g.top_p) == (None, None)  # the critic's own rollouts' settings, read when it is loaded
    fallback = candidate_settings(None)  # a critic that records none: the quickstart's
    assert (fallback.temperature, fallback.top_p) == (r.temperature, r.top_p) == (q.temperature, q.top_p) == (0.7, 0.9)


@pytest.mark.parametrize("native", [False, True])
def test_grpo_demo_recipe_follows_native_bf16(native, monkeypatch):
    from lenvm_rl import defaults

    monkeypatch.setattr(defaults, "native_bf16", lambda: native)
    recipe = str(Path(__file__).resolve().parents[1] / "recipes/SmolLM2-135M-Instruct/grpo/config_demo.yaml")
    _, (_, training_args, *_), _ = cli.parse_grpo(["--config", recipe])
    assert training_args.bf16 is native and training_args.use_cpu
    _, (_, training_args, *_), _ = cli.parse_grpo(["--config", recipe, "--bf16", str(not native)])
    assert training_args.bf16 is (not native)  # a flag still wins
