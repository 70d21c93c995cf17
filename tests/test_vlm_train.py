"""VLM rollouts -> examples (targets only on generated tokens, images kept through cuts) and LengthValueTrainer
on tiny random VLMs (full and LoRA), with the checkpoint reloading with its processor."""

from __future__ import annotations

import random

import pytest
import torch
from vlm_helpers import image_message, make_family, save_image

from lenvm_rl.critic import LengthCritic
from lenvm_rl.data import IGNORE_INDEX, VisionLengthValueCollator, build_dataset, build_examples
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer
from lenvm_rl.vlm import VisionInputError, image_token_id


def vlm_records(tokenizer, image_paths, n: int = 8, seed: int = 0, truncated_every: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        length = rng.randint(2, 12)
        body = [rng.randint(300, 5000) for _ in range(length - 1)]
        finished = not (truncated_every and i % truncated_every == 0)
        ids = body + [tokenizer.eos_token_id] if finished else body + [rng.randint(300, 5000)]
        p = i % len(image_paths)
        records.append(
            {
                "prompt_id": f"img{p}",
                "prompt": image_message(f"What is in picture {p}?"),
                "images": [image_paths[p]],
                "completion": tokenizer.decode(body),
                "completion_ids": ids,
                "finish_reason": "stop" if finished else "length",
                "num_tokens": len(ids),
                "sample_index": i // len(image_paths),
            }
        )
    return records


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    return [save_image(d / f"{i}.png", seed=i) for i in range(3)]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_vlm_examples_train_only_generated_tokens(family, images):
    processor, model = make_family(family)
    records = vlm_records(processor.tokenizer, images, truncated_every=4)
    examples, stats = build_examples(records, processor, max_length=None)
    assert stats.censored == 2 and len(examples) == 8
    image_id = image_token_id(model.config)
    for ex, rec in zip(examples, records):
        ids = ex["input_ids"]
        p = len(ids) - ex["completion_length"]
        assert image_id in ids[:p]  # the prompt holds the image tokens
        targets = ex["lower_bounds"] if ex["censored"] else ex["labels"]
        trained = [i for i, t in enumerate(targets) if t != IGNORE_INDEX]
        assert trained == list(range(p - 1, len(ids)))  # last prompt token through the completion only
        assert all(ids[i] != image_id for i in trained[1:])
        assert ex["images"] == rec["images"]
    batch = VisionLengthValueCollator(processor)(examples[:3])
    assert "pixel_values" in batch and batch["input_ids"].shape[0] == 3
    lenvm = LengthValueModel.from_backbone(model, gamma=0.95)
    with torch.no_grad():
        out = lenvm(**batch)
    assert out.value.shape == batch["input_ids"].shape


def test_vlm_cut_keeps_image_tokens(images):
    processor, model = make_family("qwen2_5_vl")
    records = vlm_records(processor.tokenizer, images, n=3)
    full, _ = build_examples(records, processor, max_length=None)
    plen = len(full[0]["input_ids"]) - len(records[0]["completion_ids"])
    cut, stats = build_examples(records, processor, max_length=plen - 2)
    first = full[0]["input_ids"].index(processor.tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    for ex, ref in zip(cut, full):
        assert len(ex["input_ids"]) <= plen - 2
        assert ex["input_ids"][: plen - first].count(image_token_id(model.config)) == ref["input_ids"].count(
            image_token_id(model.config)
        )
    assert stats.completions_cut == 3
    with pytest.raises(ValueError, match="image tokens"):
        build_examples(records, processor, max_length=4)


def test_image_records_need_a_processor(images, tokenizer):
    processor, _ = make_family("idefics3")
    records = vlm_records(processor.tokenizer, images, n=2)
    with pytest.raises(VisionInputError, match="processor"):
        build_examples(records, tokenizer)
    records[0]["images"] = []
    with pytest.raises(VisionInputError, match="image part"):
        build_examples(records, processor)


@pytest.mark.parametrize("family,lora", [("qwen2_5_vl", False), ("idefics3", False), ("qwen2_5_vl", True)])
def test_vlm_trainer_trains_and_saves_with_processor(family, lora, images, tmp_path):
    processor, model = make_family(family)
    records = vlm_records(processor.tokenizer, images, n=8, truncated_every=5)
    ds, _ = build_dataset(records, processor, max_length=64)
    if lora:  # a LoRA checkpoint names its base model (a hub id or, here, a local dir) to reload from
        model.save_pretrained(tmp_path / "base")
        model = str(tmp_path / "base")
    lenvm = LengthValueModel.from_backbone(model)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8)
    args = LengthValueConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )
    trainer = LengthValueTrainer(
        model=lenvm, args=args, train_dataset=ds, eval_dataset=ds, processing_class=processor, peft_config=peft_config
    )
    head_before = lenvm.v_head.fc.weight.detach().clone()
    trainer.train()
    assert not torch.equal(head_before, lenvm.v_head.fc.weight.detach())
    metrics = trainer.evaluate()
    # The evaluation saw the images: its value MSE is the one computed here from a forward with them, which other
    # pixels change (a forward without pixels is refused).
    batch = VisionLengthValueCollator(processor)([ds[i] for i in range(len(ds))])
    labels = batch.pop("labels")
    batch.pop("lower_bounds", None)
    trained = labels != IGNORE_INDEX
    targets = -(1 - trainer.gamma ** labels.clamp(min=0).double())
    lenvm.eval()
    with torch.no_grad():
        with_images = lenvm(**batch).value.double()
        other_pixels = lenvm(**{**batch, "pixel_values": batch["pixel_values"].neg()}).value.double()
    expected = float(((with_images - targets)[trained] ** 2).mean())
    assert metrics["eval_value_mse"] == pytest.approx(expected, rel=1e-4)
    assert float(((other_pixels - targets)[trained] ** 2).mean()) != pytest.approx(expected, rel=1e-4)
    if lora:
        trainable = [n for n, p in lenvm.backbone.named_parameters() if p.requires_grad]
        assert trainable and all("language_model" in n for n in trainable)
    trainer.save_model(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "value_head.safetensors").is_file()
    assert (tmp_path / "ckpt" / "processor_config.json").is_file()
    loaded = LengthCritic.from_pretrained(
        tmp_path / "ckpt", device="cpu", processor=processor if family == "qwen2_5_vl" else None
    )
    n = loaded.predict_length([image_message("What is in picture 0?")], images=[[images[0]]])
    lenvm.eval()
    ref = LengthCritic(lenvm, processor).predict_length([image_message("What is in picture 0?")], images=[[images[0]]])
    assert torch.allclose(n, ref, rtol=1e-3)


@pytest.mark.parametrize("lora", [False, True])
def test_lenvm_train_command_on_a_local_vlm(lora, images, tmp_path):
    """`lenvm train` with a VLM dir (a hub id works the same): the processor is loaded, used and saved."""
    import json

    import yaml

    from lenvm_rl.cli import main

    processor, model = make_family("idefics3")
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("".join(json.dumps(r) + "\n" for r in vlm_records(processor.tokenizer, images, n=6)))
    recipe = {
        "model_name_or_path": str(tmp_path / "vlm"),
        "rollouts": str(rollouts),
        "eval_share": 0.0,
        "output_dir": str(tmp_path / "ckpt"),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "gamma": "auto",
        "max_length": 128,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        **({"use_peft": True, "lora_r": 4, "lora_alpha": 8} if lora else {}),
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "recipe.yaml")]) == 0
    critic = LengthCritic.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert type(critic.processor).__name__ == "Idefics3Processor" and critic.model.is_peft == lora
    n = critic.predict_length([image_message("What is in picture 1?")], images=[[images[1]]])
    assert n.shape == (1,) and n[0] > 0
