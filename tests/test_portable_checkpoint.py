"""A LenVM checkpoint is portable: it loads from its own directory alone, wherever it is copied, and its
lenvm_config.json records the base model by the name the user gave, not a path of the training machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from conftest import tiny_config
from transformers import LlamaForCausalLM

from lenvm_rl.critic import LengthCritic
from lenvm_rl.defaults import DEFAULT_HUB_ID, DEFAULT_MODEL, is_default_model, portable_model_name
from lenvm_rl.modeling import LENVM_CONFIG_FILE, LengthValueModel

PROMPTS = ["Write a haiku about rain.", "Explain gravity in one sentence."]


def _tiny_base(path: Path, tokenizer) -> Path:
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _meta(path: Path) -> dict:
    return json.loads((path / LENVM_CONFIG_FILE).read_text())


def test_copied_checkpoint_loads_without_the_original_or_its_base(tmp_path, tokenizer):
    base = _tiny_base(tmp_path / "base", tokenizer)
    torch.manual_seed(1)
    model = LengthValueModel.from_backbone(str(base), gamma=0.99)
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    expected = LengthCritic.from_pretrained(tmp_path / "ckpt", device="cpu").predict_length(PROMPTS)

    shutil.copytree(tmp_path / "ckpt", tmp_path / "elsewhere" / "ckpt")
    shutil.rmtree(tmp_path / "ckpt")
    shutil.rmtree(base)  # the recorded base model is gone too: a full checkpoint never reads it
    critic = LengthCritic.from_pretrained(tmp_path / "elsewhere" / "ckpt", device="cpu")
    assert critic.tokenizer is not None and critic.gamma == 0.99
    assert torch.equal(critic.predict_length(PROMPTS), expected)


def test_base_model_records_the_hub_id_given(tmp_path, tokenizer):
    torch.manual_seed(0)
    backbone = LlamaForCausalLM(tiny_config(len(tokenizer)))
    backbone.config._name_or_path = "some-org/tiny-llama"  # as if loaded with from_pretrained("some-org/tiny-llama")
    LengthValueModel.from_backbone(backbone, gamma=0.99).save_pretrained(tmp_path / "ckpt")
    meta = _meta(tmp_path / "ckpt")
    assert meta["base_model"] == "some-org/tiny-llama" and not meta["base_model_embedded"]
    assert not Path(meta["base_model"]).is_absolute()


def test_embedded_default_is_recorded_by_its_hub_id(tmp_path, tiny_backbone, default_model_dir):
    """A model built on the converted embedded default records its hub id, never the cache path."""
    assert is_default_model(default_model_dir) and is_default_model(DEFAULT_MODEL)
    assert portable_model_name(str(default_model_dir)) == DEFAULT_HUB_ID
    assert portable_model_name("./my-model") == "./my-model" and portable_model_name(None) is None
    model = LengthValueModel(tiny_backbone, gamma=0.99, base_model_name=str(default_model_dir))
    model.save_pretrained(tmp_path / "ckpt")
    meta = _meta(tmp_path / "ckpt")
    assert meta["base_model"] == DEFAULT_HUB_ID and meta["base_model_embedded"] is True
    assert str(default_model_dir) not in (tmp_path / "ckpt" / LENVM_CONFIG_FILE).read_text()
    # Loading and saving again keeps both.
    LengthValueModel.from_pretrained(tmp_path / "ckpt").save_pretrained(tmp_path / "again")
    assert _meta(tmp_path / "again") == meta


def test_lora_checkpoint_on_the_embedded_default_finds_the_embedded_weights(tmp_path, tokenizer, monkeypatch):
    """A LoRA checkpoint needs its base weights: for the embedded default it asks for them by name (converted
    on the loading machine), not by the training machine's cache path."""
    from peft import LoraConfig

    from lenvm_rl import modeling
    from lenvm_rl.trainer import _wrap_lora

    base = _tiny_base(tmp_path / "stand-in-for-the-default", tokenizer)
    asked = []

    def fake_resolve(name):  # the embedded default -> the tiny stand-in, so the test stays small
        asked.append(name)
        return str(base) if name == DEFAULT_MODEL else str(name)

    monkeypatch.setattr(modeling, "resolve_model", fake_resolve)
    torch.manual_seed(1)
    model = LengthValueModel.from_backbone(str(base), gamma=0.99)
    _wrap_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.base_model_name = DEFAULT_MODEL  # as from_backbone(None) records it
    model.save_pretrained(tmp_path / "lora")
    meta = _meta(tmp_path / "lora")
    assert meta["adapter"] and meta["base_model"] == DEFAULT_HUB_ID and meta["base_model_embedded"]

    shutil.copytree(tmp_path / "lora", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "lora")
    asked.clear()
    loaded = LengthValueModel.from_pretrained(tmp_path / "elsewhere").eval()
    assert asked == [DEFAULT_MODEL]
    ids = torch.randint(5, 1000, (2, 10), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loaded(ids).value, model.eval()(ids).value, atol=1e-6)
