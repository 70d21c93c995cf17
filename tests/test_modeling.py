import json

import pytest
import torch
from safetensors.torch import save_file

from lenvm_rl.modeling import (
    LENVM_CONFIG_FILE,
    VALUE_HEAD_FILE,
    LengthValueModel,
    backbone_load_kwargs,
    ensure_writable_output,
)


def _ids(n=2, t=12, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (n, t), generator=g)


def test_values_lie_in_minus_one_zero_and_no_vocab_projection(tiny_backbone):
    model = LengthValueModel(tiny_backbone, gamma=0.99)
    assert not any("lm_head" in n for n, _ in model.named_parameters())
    v = model(_ids()).value
    assert v.shape == (2, 12) and torch.all(v < 0) and torch.all(v > -1)


def test_left_and_right_padding_give_the_same_values(tiny_backbone):
    model = LengthValueModel(tiny_backbone, gamma=0.99).eval()
    ids = _ids(1, 9)
    pad = torch.full((1, 3), 2)
    left = model(torch.cat([pad, ids], 1), torch.cat([torch.zeros(1, 3), torch.ones(1, 9)], 1).long()).value
    right = model(torch.cat([ids, pad], 1), torch.cat([torch.ones(1, 9), torch.zeros(1, 3)], 1).long()).value
    alone = model(ids).value
    assert torch.allclose(left[:, 3:], alone, atol=1e-5) and torch.allclose(right[:, :9], alone, atol=1e-5)


def test_checkpoint_round_trip_is_exact(tmp_path, tiny_backbone, tokenizer):
    model = LengthValueModel(tiny_backbone, gamma=0.995).eval()
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / LENVM_CONFIG_FILE).read_text())
    assert meta["gamma"] == 0.995 and meta["head_type"] == "fc-silu-summary"
    loaded = LengthValueModel.from_pretrained(tmp_path).eval()
    assert loaded.gamma == 0.995
    ids = _ids()
    assert torch.equal(loaded(ids).value, model(ids).value)


def test_reference_layout_loads_only_with_an_explicit_gamma(tmp_path, tiny_backbone):
    """Published LenVM: a backbone dir + value_head.safetensors with v_head.* keys, no lenvm_config.json."""
    model = LengthValueModel(tiny_backbone, gamma=0.997).eval()
    tiny_backbone.save_pretrained(tmp_path)
    save_file(
        {f"v_head.{k}": v.contiguous() for k, v in model.v_head.state_dict().items()}, str(tmp_path / VALUE_HEAD_FILE)
    )
    with pytest.raises(ValueError, match="Pass gamma explicitly"):
        LengthValueModel.from_pretrained(tmp_path)
    loaded = LengthValueModel.from_pretrained(tmp_path, gamma=0.997).eval()
    ids = _ids()
    assert torch.equal(loaded(ids).value, model(ids).value)


def test_bad_checkpoints_are_refused(tmp_path, tiny_backbone):
    tiny_backbone.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="value_head.safetensors"):
        LengthValueModel.from_pretrained(tmp_path, gamma=0.99)
    save_file(
        {"v_head.fc.weight": torch.zeros(32, 32), "score.weight": torch.zeros(1, 32)}, str(tmp_path / VALUE_HEAD_FILE)
    )
    with pytest.raises(ValueError, match="does not hold a LenVM head"):  # never silently re-initialised
        LengthValueModel.from_pretrained(tmp_path, gamma=0.99)


def test_gamma_mismatch_is_an_error(tmp_path, tiny_backbone):
    LengthValueModel(tiny_backbone, gamma=0.99).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trained with gamma=0.99"):
        LengthValueModel.from_pretrained(tmp_path, gamma=0.997)
    assert LengthValueModel.from_pretrained(tmp_path, gamma=0.99).gamma == 0.99


def test_existing_checkpoint_is_not_overwritten(tmp_path, tiny_backbone):
    LengthValueModel(tiny_backbone, gamma=0.99).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="overwrite"):
        ensure_writable_output(tmp_path / "ckpt", overwrite=False)
    ensure_writable_output(tmp_path / "ckpt", overwrite=True)
    ensure_writable_output(tmp_path / "fresh", overwrite=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_qlora_without_cuda_says_so():
    from trl import ModelConfig

    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        backbone_load_kwargs(ModelConfig(model_name_or_path="x", load_in_4bit=True, use_peft=True))
