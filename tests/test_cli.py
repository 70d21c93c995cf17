"""CLI smoke runs on a tiny random model: rollouts -> train (YAML recipe) -> predict, LoRA -> merge."""

import json

import pytest
import yaml

from lenvm_rl.cli import main
from lenvm_rl.modeling import LengthValueModel


@pytest.fixture
def rollouts_file(tiny_causal_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    assert (
        main(
            [
                "rollouts",
                "--model",
                str(tiny_causal_dir),
                "--prompts",
                "builtin",
                "--limit",
                "6",
                "--num-samples",
                "2",
                "--max-new-tokens",
                "48",
                "--dtype",
                "float32",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    return out


def _recipe(tmp_path, tiny_causal_dir, rollouts_file, **extra):
    recipe = {
        "model_name_or_path": str(tiny_causal_dir),
        "rollouts": str(rollouts_file),
        "eval_share": 0.34,
        "output_dir": str(tmp_path / "ckpt"),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "gamma": "auto",
        "max_length": 128,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow  # rollouts, training and prediction
def test_rollouts_train_predict(tiny_causal_dir, tmp_path, rollouts_file, capsys):
    records = [json.loads(x) for x in rollouts_file.read_text().splitlines()]
    assert len(records) == 12
    recipe = _recipe(tmp_path, tiny_causal_dir, rollouts_file)
    assert main(["train", "--config", str(recipe), "--learning_rate", "1e-3"]) == 0  # a flag overrides the YAML
    ckpt = tmp_path / "ckpt"
    model = LengthValueModel.from_pretrained(ckpt)
    assert 0 < model.gamma < 1
    args = __import__("torch").load(ckpt / "training_args.bin", weights_only=False)
    assert args.learning_rate == 1e-3
    assert (ckpt / "eval_results.json").is_file()
    assert main(["predict", "--critic", str(ckpt), "--prompt", "Say hi.", "--prompt", "Write a poem."]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip().endswith("'") and "tokens" in x]
    assert len(lines) == 2
    with pytest.raises(FileExistsError, match="overwrite"):  # the trained checkpoint is not overwritten
        main(["train", "--config", str(recipe)])


@pytest.mark.slow  # LoRA training and a merge
def test_lora_recipe_then_merge(tiny_causal_dir, tmp_path, rollouts_file):
    recipe = _recipe(
        tmp_path,
        tiny_causal_dir,
        rollouts_file,
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        eval_share=0.0,
    )
    assert main(["train", "--config", str(recipe)]) == 0
    assert (tmp_path / "ckpt" / "adapter_config.json").is_file()
    assert main(["merge", "--checkpoint", str(tmp_path / "ckpt"), "--output", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert (
        LengthValueModel.from_pretrained(tmp_path / "merged").gamma
        == LengthValueModel.from_pretrained(tmp_path / "ckpt").gamma
    )


def test_unknown_command_and_help(capsys):
    assert main(["nonsense"]) == 2
    assert main(["--help"]) == 0
    assert "quickstart" in capsys.readouterr().out


def test_bad_gamma_in_a_recipe(tiny_causal_dir, tmp_path, rollouts_file):
    recipe = _recipe(tmp_path, tiny_causal_dir, rollouts_file, gamma=1.5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        main(["train", "--config", str(recipe)])


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--min_p", "1.5"], r"min_p must be in \[0, 1\)"),
        (["--trust_region", "0"], "trust_region"),
        (["--length_prompt", "Be brief."], r"no \{target\} placeholder"),
        (["--mode", "tilt", "--beta", "1", "--length_prompt", "default"], "cannot take a budget prompt"),
    ],
)
def test_generate_refuses_bad_candidate_settings_before_loading(tmp_path, flags, match):
    argv = ["generate", "--critic", str(tmp_path / "none"), "--prompt", "Hi", "--target_tokens", "5", *flags]
    with pytest.raises(ValueError, match=match):  # no checkpoint there: the checks come before any loading
        main(argv)


@pytest.mark.slow  # training, then generation
def test_generate_command(tiny_causal_dir, tmp_path, rollouts_file, capsys):
    recipe = _recipe(tmp_path, tiny_causal_dir, rollouts_file, eval_share=0.0)
    assert main(["train", "--config", str(recipe)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--critic",
                str(tmp_path / "ckpt"),
                "--model",
                str(tiny_causal_dir),
                "--prompt",
                "Hi",
                "--mode",
                "at_most",
                "--target-tokens",
                "5",
                "--max-new-tokens",
                "16",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    n = int(out.strip().splitlines()[-1].strip("[]").split()[0])
    assert n <= 5
    import re

    line = re.fullmatch(
        r"\[(\d+) tokens, end: (natural|forced), mean NLL (\d+\.\d\d), rep-4 (-|\d\.\d\d)\]",
        out.strip().splitlines()[-1],
    )
    assert line and int(line[1]) == n and float(line[3]) > 0  # a tiny random generator: high NLL, not NaN
    assert (line[4] == "-") == (n < 4)  # rep-4 needs four tokens
    # the candidates follow the sampling of the critic's rollouts, recorded in its lenvm_config.json by `lenvm train`
    assert json.loads((tmp_path / "ckpt" / "lenvm_config.json").read_text())["rollout_sampling"] == {
        "temperature": 0.7,
        "top_p": 0.9,
    }
    assert "[lenvm] candidates: temperature 0.7, top_p 0.9, min_p 0.05 (the critic's rollouts, recorded in" in out
    assert "budget in the prompt: none; trust region: off" in out
    with pytest.raises(ValueError, match="exceeds max_new_tokens"):
        main(
            [
                "generate",
                "--critic",
                str(tmp_path / "ckpt"),
                "--prompt",
                "Hi",
                "--target-tokens",
                "99",
                "--max-new-tokens",
                "16",
            ]
        )
