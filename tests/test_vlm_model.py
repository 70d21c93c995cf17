"""LenVM on vision-language backbones: values, tree scoring with images in the cache, critic, checkpoints, errors.

Tiny random-weight Qwen2.5-VL and Idefics3 (SmolVLM family) models built from configs (tests/vlm_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from vlm_helpers import image_message, make_family, make_image, save_image

from lenvm_rl.critic import LengthCritic
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.scoring import NaiveCachedScorer, TreeScorer, naive_candidate_values
from lenvm_rl.vlm import ProcessorMismatchError, VisionInputError, language_lora_targets, render_prompts, vision_inputs

FAMILIES = ["qwen2_5_vl", "idefics3"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    processor, model = make_family(request.param)
    lenvm = LengthValueModel.from_backbone(model, gamma=0.99).eval()
    return request.param, processor, lenvm


def _batch(processor):
    return render_prompts(
        processor,
        [image_message("What is in the picture?"), "A text-only prompt, a bit longer."],
        [[make_image(0)], []],
    )


def test_vlm_values_shape_and_images_matter(family):
    _, processor, model = family
    enc = _batch(processor)
    with torch.no_grad():
        v = model(**enc).value
    assert v.shape == enc["input_ids"].shape
    assert ((v < 0) & (v > -1)).all()
    other = render_prompts(processor, [image_message("What is in the picture?")], [[make_image(7)]])
    same = render_prompts(processor, [image_message("What is in the picture?")], [[make_image(0)]])
    with torch.no_grad():
        v_other, v_same = model(**other).value[0, -1], model(**same).value[0, -1]
    assert torch.allclose(v_same, v[0, -1], atol=1e-5)  # left padding in a batch changes nothing
    assert not torch.allclose(v_other, v_same)  # the head sees the image


def test_vlm_head_reads_language_model_hidden_size(family):
    _, _, model = family
    assert model.v_head.fc.in_features == model.config.get_text_config().hidden_size
    assert model.is_vision and model.lenvm_config()["hidden_size"] == 32


def test_vlm_tree_scoring_matches_one_by_one(family):
    """The critic's cache holds the image tokens of the prefix; candidates scored in one forward equal full
    forwards of prefix + candidate, over several steps."""
    _, processor, model = family
    enc = _batch(processor)
    vision = vision_inputs(enc)
    for scorer in (TreeScorer(model), NaiveCachedScorer(model, copy=False)):
        ids, mask = enc["input_ids"], enc["attention_mask"]
        v0 = scorer.start(ids[:, :-1], mask[:, :-1], **vision)
        with torch.no_grad():
            full = model(**enc).value
        assert torch.allclose(v0, full[:, -2], atol=1e-5)
        prev = ids[:, -1]
        for step, cands in enumerate(
            [torch.tensor([[100, 200, 300], [400, 500, 600]]), torch.tensor([[7, 8, 9], [10, 11, 12]])]
        ):
            v_prev, v_cands = scorer.step(prev, cands)
            ref = naive_candidate_values(model, ids, mask, cands, **vision)
            assert torch.allclose(v_cands, ref, atol=1e-5), step
            prev = cands[:, 0]
            ids = torch.cat([ids, prev[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)


def test_vlm_critic_predict_length_and_reload(family, tmp_path):
    name, processor, model = family
    critic = LengthCritic(model, processor)
    img = save_image(tmp_path / "img.png", seed=3)
    n = critic.predict_length([image_message("Describe it."), "Hello"], images=[[img], None])
    assert n.shape == (2,) and (n > 0).all()
    # a string prompt with images gets its image parts in front of the text
    n_str = critic.predict_length(["Describe it."], images=[[img]])
    assert torch.allclose(n_str, n[:1], rtol=1e-4)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    # the Qwen2.5-VL processor class needs torchvision to load; hand it over where it cannot load here
    loaded = LengthCritic.from_pretrained(
        tmp_path / "ckpt", device="cpu", processor=processor if name == "qwen2_5_vl" else None
    )
    assert loaded.processor is not None and loaded.model.is_vision
    again = loaded.predict_length([image_message("Describe it."), "Hello"], images=[[img], None])
    assert torch.allclose(again, n, rtol=1e-4)


def test_idefics3_checkpoint_reloads_with_its_processor(tmp_path):
    processor, model = make_family("idefics3")
    lenvm = LengthValueModel.from_backbone(model, gamma=0.98)
    lenvm.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    critic = LengthCritic.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert type(critic.processor).__name__ == "Idefics3Processor"
    assert critic.gamma == 0.98


def test_vlm_backbone_from_local_path(tmp_path):
    """from_backbone on a saved AutoModelForImageTextToText dir (a hub id works the same) takes its body."""
    processor, model = make_family("qwen2_5_vl")
    model.save_pretrained(tmp_path / "vlm")
    lenvm = LengthValueModel.from_backbone(str(tmp_path / "vlm"), gamma=0.99)
    assert type(lenvm.backbone).__name__ == "Qwen2_5_VLModel"
    enc = _batch(processor)
    with torch.no_grad():
        ref = LengthValueModel(lenvm.backbone, gamma=0.99, head=lenvm.v_head)(**enc).value
        assert torch.allclose(lenvm(**enc).value, ref)


def test_lora_targets_language_tower_only(family):
    from peft import LoraConfig

    from lenvm_rl.trainer import _wrap_lora

    name, processor, _ = family
    _, model = make_family(name, seed=1)
    lenvm = LengthValueModel.from_backbone(model, gamma=0.99)
    regex = language_lora_targets(lenvm.backbone)
    _wrap_lora(lenvm, LoraConfig(r=4, lora_alpha=8))
    adapted = [n for n, _ in lenvm.backbone.named_modules() if n.endswith("lora_A")]
    assert adapted, regex
    assert all(("language_model" in n or "text_model" in n) for n in adapted), adapted
    assert not any(("visual" in n or "vision" in n) for n in adapted)


# ---------------------------------------------------------------------------------------------- bad input
def test_images_to_text_only_critic_are_refused(tiny_backbone, tokenizer):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.99), tokenizer)
    with pytest.raises(VisionInputError, match="text-only"):
        critic.predict_length(["Describe it."], images=[[make_image(0)]])
    with pytest.raises(VisionInputError, match="text-only"):
        critic.predict_length([image_message("Describe it.")])
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(VisionInputError, match="text-only"):
        critic.values(ids, pixel_values=torch.zeros(1, 3, 8, 8))


def test_vlm_prompt_without_its_images_is_refused(family):
    _, processor, model = family
    critic = LengthCritic(model, processor)
    with pytest.raises(VisionInputError, match="image part"):
        critic.predict_length([image_message("Describe it.")])
    with pytest.raises(VisionInputError, match="image part"):
        critic.predict_length([image_message("Describe it.", n_images=2)], images=[[make_image(0)]])
    enc = _batch(processor)
    with pytest.raises(VisionInputError, match="no pixel_values"):
        critic.values(enc["input_ids"], enc["attention_mask"])
    text = render_prompts(processor, ["plain"])
    with pytest.raises(VisionInputError, match="no image token"):
        critic.values(text["input_ids"], text["attention_mask"], **vision_inputs(enc))


def test_processor_that_does_not_match_is_refused(tokenizer, tiny_backbone):
    q_processor, q_model = make_family("qwen2_5_vl")
    i_processor, _ = make_family("idefics3")
    lenvm = LengthValueModel.from_backbone(q_model, gamma=0.99)
    with pytest.raises(ProcessorMismatchError, match="AutoProcessor.from_pretrained"):
        LengthCritic(lenvm, i_processor)
    with pytest.raises(ProcessorMismatchError, match="text-only"):
        LengthCritic(LengthValueModel(tiny_backbone, gamma=0.99), q_processor)
    critic = LengthCritic(lenvm, q_processor)
    with pytest.raises(ProcessorMismatchError):
        critic.check_tokenizer(i_processor)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_freeze_layers_leaves_the_top_text_layer_its_norm_and_the_head_trainable(family):
    from lenvm_rl.layers import freeze_lower_layers

    _, backbone = make_family(family)
    model = LengthValueModel.from_backbone(backbone, gamma=0.9)
    freeze_lower_layers(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    tower = "language_model" if family == "qwen2_5_vl" else "text_model"
    assert {n.split(".")[1] for n in trainable if n.startswith("backbone.")} == {tower}
    assert any(f".{tower}.layers.1." in n for n in trainable) and not any(f".{tower}.layers.0." in n for n in trainable)
    assert f"backbone.{tower}.norm.weight" in trainable and "v_head.summary.weight" in trainable
    assert not any("vision" in n or "visual" in n or "embed" in n for n in trainable)
