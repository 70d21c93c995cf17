"""Rollouts with images from tiny random VLM generators (tests/vlm_helpers.py): records that carry their images
(paths as given, pixels saved as PNG files beside the output), round-trip into build_examples, resume, truncation,
and the errors raised before anything is generated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vlm_helpers import image_message, make_family, make_image, save_image

from lenvm_rl.data import IGNORE_INDEX, build_examples, load_rollouts
from lenvm_rl.rollouts import SamplingConfig, generate_rollouts, load_prompts
from lenvm_rl.vlm import MissingVisionDependencyError, VisionInputError, image_token_id, load_image

MAX_NEW = 6


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def save_generator(name: str, path):
    """A tiny VLM generator dir that samples among 4 words and EOS (a random model almost never samples EOS out of
    49k tokens), so completions both end (EOS) and get cut at MAX_NEW tokens."""
    processor, model = make_family(name)
    tok = processor.tokenizer
    allowed = set(range(1000, 1004)) | {tok.eos_token_id}
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i not in allowed]
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return processor, model


@pytest.fixture(scope="module", params=["qwen2_5_vl", "idefics3"])
def generator(request, tmp_path_factory):
    """(name, dir, processor, kwargs): the Qwen2.5-VL processor cannot reload here (no torchvision), so it is
    handed over; the Idefics3 one is loaded from the dir, as `lenvm rollouts` does."""
    path = tmp_path_factory.mktemp(request.param)
    processor, model = save_generator(request.param, path)
    kw = {"processor": processor} if request.param == "qwen2_5_vl" else {}
    return request.param, path, processor, model, kw


def _prompts(image_dir):
    return [
        {
            "prompt_id": "a-path",
            "prompt": image_message("What is in the picture?"),
            "images": [save_image(image_dir / "a.png", seed=1)],
            "answer": "a square",
        },
        {
            "prompt_id": "b-pil",
            "prompt": image_message("Compare them.", n_images=2),
            "images": [make_image(2), make_image(3, size=(84, 56))],
        },
        {"prompt_id": "c-string", "prompt": "Describe it.", "image": make_image(4)},  # image parts go in front
        {"prompt_id": "d-text", "prompt": [{"role": "user", "content": "No picture here."}]},
    ]


def test_vlm_rollouts_round_trip_into_examples(generator, tmp_path):
    name, path, processor, model, kw = generator
    prompts = _prompts(tmp_path)
    out = tmp_path / "r.jsonl"
    sampling = SamplingConfig(num_samples=3, max_new_tokens=MAX_NEW, seed=0)
    generate_rollouts(
        prompts, out, model=str(path), sampling=sampling, batch_size=5, dtype="float32", progress=False, **kw
    )
    recs = _records(out)
    assert len(recs) == 12 and len({(r["prompt_id"], r["sample_index"]) for r in recs}) == 12
    eos = processor.tokenizer.eos_token_id
    for r in recs:  # truncation as for text
        assert r["num_tokens"] == len(r["completion_ids"]) <= MAX_NEW
        if r["finish_reason"] == "stop":
            assert r["completion_ids"][-1] == eos
        else:
            assert r["num_tokens"] == MAX_NEW and eos not in r["completion_ids"]
    assert {r["finish_reason"] for r in recs} == {"stop", "length"}
    by_id = {r["prompt_id"]: r for r in recs}
    assert by_id["a-path"]["images"] == prompts[0]["images"] and by_id["a-path"]["answer"] == "a square"
    for pid, originals in (("b-pil", prompts[1]["images"]), ("c-string", [prompts[2]["image"]])):
        refs = by_id[pid]["images"]
        assert len(refs) == len(originals)
        for ref, original in zip(refs, originals):  # pixels saved as PNG beside the output, exactly
            assert ref.startswith(str((tmp_path / "r.jsonl.images").resolve())) and ref.endswith(".png")
            assert np.array_equal(np.asarray(load_image(ref)), np.asarray(original.convert("RGB")))
    assert by_id["c-string"]["prompt"] == image_message("Describe it.")
    assert "image" not in by_id["c-string"] and "images" not in by_id["d-text"]
    assert sum(p.get("type") == "image" for p in by_id["b-pil"]["prompt"][0]["content"]) == 2

    examples, stats = build_examples(load_rollouts(out), processor)
    assert stats.records == 12 and stats.retokenized == 0  # the generator's ids are kept as they are
    image_id = image_token_id(model.config)
    for ex, rec in zip(examples, recs):
        ids, n = ex["input_ids"], ex["completion_length"]
        p = len(ids) - n
        assert ids[p:] == rec["completion_ids"]
        assert ids[:p].count(image_id) > 0 if rec.get("images") else image_id not in ids
        targets = ex["lower_bounds"] if ex["censored"] else ex["labels"]
        assert ex["censored"] == (rec["finish_reason"] == "length")
        assert [i for i, t in enumerate(targets) if t != IGNORE_INDEX] == list(range(p - 1, len(ids)))
        assert ex["images"] == rec.get("images", [])


def test_vlm_rollouts_resume(generator, tmp_path):
    name, path, processor, _, kw = generator
    prompts = _prompts(tmp_path)
    out = tmp_path / "r.jsonl"
    run = dict(
        model=str(path),
        sampling=SamplingConfig(num_samples=2, max_new_tokens=MAX_NEW),
        batch_size=3,
        dtype="float32",
        progress=False,
        **kw,
    )
    generate_rollouts(prompts, out, **run)
    first = _records(out)
    pngs = sorted((tmp_path / "r.jsonl.images").iterdir())
    assert len(pngs) == 3
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:30])  # killed while writing the 6th record
    generate_rollouts(prompts, out, **run)
    recs = _records(out)
    keys = [(r["prompt_id"], r["sample_index"]) for r in recs]
    assert len(keys) == len(set(keys)) == 8
    assert (tmp_path / "r.jsonl.torn").read_text() == lines[5][:30]
    assert recs[:5] == first[:5]
    refs = {(r["prompt_id"], r["sample_index"]): (r["prompt"], r.get("images")) for r in recs}
    assert all(refs[r["prompt_id"], r["sample_index"]] == (r["prompt"], r.get("images")) for r in first)
    assert sorted((tmp_path / "r.jsonl.images").iterdir()) == pngs
    before = out.read_text()
    generate_rollouts(prompts, out, **run)  # all done: nothing is added
    assert out.read_text() == before
    assert len(build_examples(load_rollouts(out), processor)[0]) == 8


def test_prompt_without_its_images_is_refused_before_generation(tmp_path):
    """The generator is never loaded: the model path does not even exist."""
    out = tmp_path / "r.jsonl"
    kw = dict(
        model=str(tmp_path / "no-such-generator"),
        sampling=SamplingConfig(num_samples=1, max_new_tokens=2),
        progress=False,
    )
    with pytest.raises(VisionInputError, match="image part.*no images were given"):
        generate_rollouts([{"prompt_id": "x", "prompt": image_message("Describe.")}], out, **kw)
    with pytest.raises(VisionInputError, match="2 image part.*1 images were given"):
        generate_rollouts(
            [{"prompt_id": "x", "prompt": image_message("Describe.", n_images=2), "images": [make_image(0)]}], out, **kw
        )
    with pytest.raises(FileNotFoundError, match="missing.png"):
        generate_rollouts(
            [{"prompt_id": "x", "prompt": "Describe.", "images": [str(tmp_path / "missing.png")]}], out, **kw
        )
    with pytest.raises(ValueError, match="column 'thumbnail'"):
        generate_rollouts([{"prompt_id": "x", "prompt": "Describe.", "thumbnail": make_image(0)}], out, **kw)
    with pytest.raises(NotImplementedError, match="--backend hf"):
        generate_rollouts(
            [{"prompt_id": "x", "prompt": "Describe.", "images": [make_image(0)]}], out, backend="vllm", **kw
        )
    assert not out.exists() and not (tmp_path / "r.jsonl.images").exists()


def test_images_need_a_vision_language_generator(tiny_causal_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(VisionInputError, match="text-only"):
        generate_rollouts(
            [{"prompt_id": "x", "prompt": "Describe.", "images": [make_image(0)]}],
            out,
            model=str(tiny_causal_dir),
            sampling=SamplingConfig(1, 2),
            dtype="float32",
            progress=False,
        )
    assert not out.exists()


def test_lenvm_rollouts_command_with_a_datasets_image_column(tmp_path):
    """`lenvm rollouts` on a parquet file with datasets Image columns: the PIL images become PNG files and the
    records train a LenVM with the processor loaded from the generator dir."""
    from datasets import Dataset
    from transformers import AutoProcessor

    from lenvm_rl.cli import main

    save_generator("idefics3", tmp_path / "vlm")
    Dataset.from_dict(
        {"question": ["What is it?", "Which is bigger?"], "images": [[make_image(5)], [make_image(6), make_image(7)]]}
    ).to_parquet(tmp_path / "p.parquet")
    prompts = load_prompts(str(tmp_path / "p.parquet"), limit=1)
    assert len(prompts) == 1 and len(prompts[0]["images"]) == 1
    out = tmp_path / "r.jsonl"
    assert (
        main(
            [
                "rollouts",
                "--model",
                str(tmp_path / "vlm"),
                "--prompts",
                str(tmp_path / "p.parquet"),
                "--output",
                str(out),
                "--num_samples",
                "2",
                "--max_new_tokens",
                str(MAX_NEW),
                "--dtype",
                "float32",
                "--batch_size",
                "4",
            ]
        )
        == 0
    )
    recs = _records(out)
    assert len(recs) == 4 and [len(r["images"]) for r in recs] == [1, 1, 2, 2]
    assert len(list((tmp_path / "r.jsonl.images").glob("*.png"))) == 3
    assert np.array_equal(np.asarray(load_image(recs[2]["images"][1])), np.asarray(make_image(7)))
    examples, _ = build_examples(load_rollouts(out), AutoProcessor.from_pretrained(tmp_path / "vlm"))
    assert len(examples) == 4


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or a build that does not import beside this torch
        return False
    return True


@pytest.mark.skipif(_torchvision_imports(), reason="torchvision imports here, so the processor loads")
def test_qwen_processor_without_torchvision_names_the_vlm_extra(tmp_path):
    """A Qwen2.5-VL dir as the hub has it (processor_class Qwen2_5_VLProcessor, with a video processor)."""
    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.modeling import LengthValueModel

    processor, model = save_generator("qwen2_5_vl", tmp_path / "vlm")
    lenvm = LengthValueModel.from_backbone(model, gamma=0.99)
    lenvm.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    for d in ("vlm", "ckpt"):
        cfg_file = tmp_path / d / "processor_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg.update(
            processor_class="Qwen2_5_VLProcessor",
            video_processor={
                "video_processor_type": "Qwen2VLVideoProcessor",
                "patch_size": 14,
                "merge_size": 2,
                "temporal_patch_size": 2,
            },
        )
        cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(MissingVisionDependencyError, match=r"pip install 'lenvm-rl\[vlm\]'"):
        generate_rollouts(
            [{"prompt_id": "x", "prompt": "Describe.", "images": [make_image(0)]}],
            tmp_path / "r.jsonl",
            model=str(tmp_path / "vlm"),
            sampling=SamplingConfig(1, 2),
            progress=False,
        )
    with pytest.raises(ImportError, match=r"pip install 'lenvm-rl\[vlm\]'"):
        LengthCritic.from_pretrained(tmp_path / "ckpt", device="cpu")
