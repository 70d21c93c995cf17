"""The CTranslate2 rollout engine: same records and distribution as hf, its conversion cache, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from lenvm_rl import ct2_engine
from lenvm_rl.rollouts import SamplingConfig, choose_backend, generate_rollouts

pytest.importorskip("ctranslate2")

PROMPTS = [
    {"prompt_id": f"q{i}", "prompt": [{"role": "user", "content": f"Say something about number {i}."}]}
    for i in range(5)
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENVM_RL_CACHE", str(tmp_path / "cache"))


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # over ~5 s on 2 cores
def test_records_follow_the_schema_and_resume(tiny_causal_dir, tokenizer, tmp_path):
    out = tmp_path / "r.jsonl"
    sampling = SamplingConfig(num_samples=2, max_new_tokens=24, temperature=0.7, top_p=0.9)
    generate_rollouts(PROMPTS[:3], out, str(tiny_causal_dir), sampling, batch_size=4, backend="ctranslate2")
    first = read(out)
    assert len(first) == 6 and {(r["prompt_id"], r["sample_index"]) for r in first} == {
        (f"q{i}", k) for i in range(3) for k in range(2)
    }
    for r in first:
        assert r["num_tokens"] == len(r["completion_ids"]) <= 24
        ended = r["completion_ids"][-1] == tokenizer.eos_token_id
        assert r["finish_reason"] == ("stop" if ended else "length")
        assert tokenizer.eos_token_id not in r["completion_ids"][:-1]
        assert r["finish_reason"] == "stop" or r["num_tokens"] == 24
        # the generation config's suppressed tokens are suppressed: only the 15 allowed words and EOS appear
        assert set(r["completion_ids"]) <= set(range(1000, 1015)) | {tokenizer.eos_token_id}
    assert {r["finish_reason"] for r in first} == {"stop", "length"} or len({r["num_tokens"] for r in first}) > 1
    # a second run over more prompts samples only the missing rows
    generate_rollouts(PROMPTS, out, str(tiny_causal_dir), sampling, batch_size=4, backend="ctranslate2")
    second = read(out)
    assert second[:6] == first and len(second) == 10


@pytest.mark.slow  # over ~5 s on 2 cores
def test_next_token_distribution_matches_hf(tiny_causal_dir, tokenizer):
    """Temperature then top-p over the whole vocabulary, as generate applies them: the engine's draws of one token
    follow the distribution computed from the HF model's logits (total variation under 0.05 in 3000 draws)."""
    from transformers import AutoModelForCausalLM

    from lenvm_rl.data import encode_prompt
    from lenvm_rl.sampling_backends import _generation_config

    temperature, top_p = 0.7, 0.9
    ids = encode_prompt(tokenizer, PROMPTS[0]["prompt"], True)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    allowed = torch.full_like(logits, float("-inf"))
    allowed[list(range(1000, 1015)) + [tokenizer.eos_token_id]] = 0
    probs = torch.softmax((logits + allowed) / temperature, -1)
    sorted_p, order = probs.sort(descending=True)
    keep = (sorted_p.cumsum(0) - sorted_p) < top_p
    expected = torch.zeros_like(probs)
    expected[order[keep]] = sorted_p[keep] / sorted_p[keep].sum()
    assert 2 <= int(keep.sum()) < 16, "the check needs top-p to cut some tokens but not all"

    path = ct2_engine.converted_model(str(tiny_causal_dir), progress=False)
    options = ct2_engine.generation_options(_generation_config(str(tiny_causal_dir)), tokenizer)
    draws = []
    for seed in range(3):
        rows = ct2_engine.sample_batches(
            path, [ids] * 1000, tokenizer, {tokenizer.eos_token_id}, 1, temperature, top_p, seed, options=options
        )
        draws += [row[0] for row in rows]
    observed = torch.bincount(torch.tensor(draws), minlength=len(expected)).float() / len(draws)
    assert observed[expected == 0].sum() == 0, "the engine drew a token that top-p leaves out"
    assert 0.5 * (observed - expected).abs().sum() < 0.05


@pytest.mark.slow  # over 2 s on the 2 cores
def test_conversion_is_cached_per_model_and_refuses_a_stale_folder(tiny_causal_dir, tmp_path):
    first = ct2_engine.converted_model(str(tiny_causal_dir), progress=False)
    assert ct2_engine.converted_model(str(tiny_causal_dir), progress=False) == first
    # another model (other weights, same name) gets another folder, never the first one's
    from transformers import AutoModelForCausalLM

    other_dir = tmp_path / tiny_causal_dir.name
    other = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    with torch.no_grad():
        other.lm_head.weight.mul_(2)
    other.save_pretrained(other_dir)
    for f in tiny_causal_dir.iterdir():
        if f.name.startswith(("tokenizer", "special", "chat")):
            (other_dir / f.name).write_bytes(f.read_bytes())
    assert ct2_engine.converted_model(str(other_dir), progress=False) != first
    # a folder whose record names other weights is refused, not used
    record = json.loads((first / ct2_engine.SOURCE_FILE).read_text())
    (first / ct2_engine.SOURCE_FILE).write_text(json.dumps({**record, "fingerprint": "0" * 16}))
    with pytest.raises(ValueError, match="converted from another model"):
        ct2_engine.converted_model(str(tiny_causal_dir), progress=False)
    assert not any(p.name.startswith(".") for p in first.parent.iterdir()), "a temporary folder was left behind"


def test_quantized_engine_needs_a_passing_distribution_check(tmp_path):
    with pytest.raises(ValueError, match="engine_distribution"):
        ct2_engine.check_quantized("m", "int8", None)
    good = {"model": "m", "quantization": "int8", "completions_per_arm": 400, "ks_p": 0.3, "mean_rel_gap": -0.03}
    path = tmp_path / "check.json"
    path.write_text(json.dumps(good))
    ct2_engine.check_quantized("m", "int8", str(path))
    for bad, why in [
        ({"ks_p": 0.01}, "KS p"),
        ({"mean_rel_gap": 0.08}, "mean gap"),
        ({"mean_rel_gap": -0.06}, "mean gap"),
        ({"completions_per_arm": 100}, "completions per arm"),
        ({"model": "other"}, "it checked"),
    ]:
        path.write_text(json.dumps({**good, **bad}))
        with pytest.raises(ValueError, match=why):
            ct2_engine.check_quantized("m", "int8", str(path))
    ct2_engine.check_quantized("m", "float32", None)  # float32 is the model itself: no check needed
    with pytest.raises(ValueError, match="unknown engine quantization"):
        ct2_engine.converted_model("m", "int4")


def test_an_architecture_the_engine_cannot_convert(tmp_path, tokenizer, capsys):
    from transformers import MambaConfig, MambaForCausalLM

    path = tmp_path / "mamba"
    MambaForCausalLM(MambaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    with pytest.raises(ct2_engine.EngineUnavailable, match="LlamaConfig"):
        ct2_engine.check_convertible(str(path))
    assert choose_backend(str(path), has_images=False) == "hf"
    assert "cannot convert" in capsys.readouterr().out


def test_auto_picks_the_engine_on_cpu_and_says_why_when_not(tiny_causal_dir, monkeypatch, capsys):
    assert choose_backend(str(tiny_causal_dir), has_images=False) == "ctranslate2"
    assert choose_backend(str(tiny_causal_dir), has_images=True) == "hf"
    assert "images" in capsys.readouterr().out
    monkeypatch.setattr(ct2_engine, "available", lambda: False)
    assert choose_backend(str(tiny_causal_dir), has_images=False) == "hf"
    assert "not installed" in capsys.readouterr().out
    with pytest.raises(ct2_engine.EngineUnavailable, match="pip install"):
        ct2_engine.check_convertible(str(tiny_causal_dir))


def test_generation_config_the_engine_cannot_reproduce():
    from transformers import GenerationConfig

    with pytest.raises(ct2_engine.EngineUnavailable, match="bad_words_ids"):
        ct2_engine.generation_options(GenerationConfig(bad_words_ids=[[5]]))
    opts = ct2_engine.generation_options(GenerationConfig(repetition_penalty=1.2, suppress_tokens=[3]))
    assert opts == {"repetition_penalty": 1.2, "suppress_sequences": [[3]]}


def test_unknown_backend_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        generate_rollouts(PROMPTS, tmp_path / "r.jsonl", "x", backend="ct2")
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.slow  # over ~5 s on 2 cores
def test_greedy_engine_writes_what_hf_writes(tiny_causal_dir, tmp_path):
    """Greedy, the engine and hf write the same completions: the prompt encoding, the EOS handling, the cap and the
    row order agree (float32 both; the tiny model's logits have no near-ties among its 16 allowed tokens)."""
    greedy = SamplingConfig(2, 12, temperature=0.0)
    kw = dict(model=str(tiny_causal_dir), sampling=greedy, batch_size=4, dtype="float32", progress=False)
    generate_rollouts(PROMPTS, tmp_path / "hf.jsonl", backend="hf", **kw)
    generate_rollouts(PROMPTS, tmp_path / "ct2.jsonl", backend="ctranslate2", **kw)
    hf = {(r["prompt_id"], r["sample_index"]): r for r in read(tmp_path / "hf.jsonl")}
    ct2 = {(r["prompt_id"], r["sample_index"]): r for r in read(tmp_path / "ct2.jsonl")}
    assert hf.keys() == ct2.keys() and len(hf) == 10
    for key in hf:
        for field in ("completion_ids", "finish_reason", "num_tokens", "completion"):
            assert ct2[key][field] == hf[key][field], (key, field)
