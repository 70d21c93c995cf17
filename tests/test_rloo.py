"""The sequence-level LenVM reward from an RLOO recipe, through TRL's own `trl rloo` script, on tiny models."""

import pytest
import yaml

from lenvm_rl.modeling import LengthValueModel
from tests.conftest import REPO


@pytest.mark.slow  # TRL's RLOO script
def test_rloo_recipe_with_the_gated_critic_return(tiny_causal_dir, tiny_backbone, tokenizer, tmp_path, monkeypatch):
    from trl.scripts import rloo

    from lenvm_rl.rl import rewards
    from lenvm_rl.rl.tasks import opposites_dataset, opposites_split

    critic = tmp_path / "critic"
    LengthValueModel(tiny_backbone, gamma=0.9).save_pretrained(critic)
    tokenizer.save_pretrained(critic)
    opposites_dataset(opposites_split()[0][:8]).to_json(str(tmp_path / "data" / "train.jsonl"))
    recipe = yaml.safe_load((REPO / "recipes/SmolLM2-135M-Instruct/rloo/config_opposites.yaml").read_text())
    recipe.update(
        model_name_or_path=str(tiny_causal_dir),
        dataset_name=str(tmp_path / "data"),
        max_steps=1,
        per_device_train_batch_size=4,
        max_completion_length=6,
        output_dir=str(tmp_path / "out"),
    )
    recipe["env"]["LENVM_CRITIC_PATH"] = str(critic)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    for key in recipe["env"]:  # the parser sets them; undo after the test
        monkeypatch.setenv(key, "unset")
    rewards._load_critic.cache_clear()

    seen = []
    original = rewards.get_lenvm_seq_reward

    def spy(gate, beta, *args, **kwargs):
        seen.append((gate.__name__, beta))
        return original(gate, beta, *args, **kwargs)

    monkeypatch.setattr(rewards, "get_lenvm_seq_reward", spy)
    parser = rloo.make_parser()
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(
        ["--config", str(tmp_path / "r.yaml")], fail_with_unknown_args=False
    )[:4]
    rloo.main(script_args, training_args, model_args, dataset_args)
    assert seen and seen[0] == ("opposites_reward", 1.0)
    assert (tmp_path / "out" / "model.safetensors").is_file()
