import json

import pytest

from lenvm_rl.rollouts import SamplingConfig, generate_rollouts, load_prompts, read_done


def _prompts(n=3):
    return [{"prompt_id": f"q{i}", "prompt": [{"role": "user", "content": f"Count to {i + 2}."}]} for i in range(n)]


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_follow_the_schema(tiny_causal_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    sampling = SamplingConfig(num_samples=2, max_new_tokens=12, temperature=1.0, seed=1)
    generate_rollouts(
        _prompts(), out, model=str(tiny_causal_dir), sampling=sampling, batch_size=4, dtype="float32", progress=False
    )
    recs = _records(out)
    assert len(recs) == 6 and {(r["prompt_id"], r["sample_index"]) for r in recs} == {
        (f"q{i}", k) for i in range(3) for k in range(2)
    }
    for r in recs:
        assert r["num_tokens"] == len(r["completion_ids"]) <= 12
        assert r["sampling"] == sampling.record() and r["generator"] == str(tiny_causal_dir)
        if r["finish_reason"] == "stop":
            assert r["completion_ids"][-1] == 2  # the EOS ends a finished completion
        else:
            assert r["num_tokens"] == 12 and 2 not in r["completion_ids"]


def test_an_interrupted_run_resumes_without_duplicates(tiny_causal_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    kw = dict(
        model=str(tiny_causal_dir),
        sampling=SamplingConfig(num_samples=2, max_new_tokens=8),
        batch_size=2,
        dtype="float32",
        progress=False,
    )
    generate_rollouts(_prompts(), out, **kw)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:20])  # killed while writing the 4th record
    generate_rollouts(_prompts(), out, **kw)
    recs = _records(out)
    keys = [(r["prompt_id"], r["sample_index"]) for r in recs]
    assert len(keys) == len(set(keys)) == 6
    assert (tmp_path / "r.jsonl.torn").read_text() == lines[3][:20]  # the torn line is kept aside, not lost
    before = out.read_text()
    generate_rollouts(_prompts(), out, **kw)  # all done: nothing is added
    assert out.read_text() == before


@pytest.mark.slow  # two samplers
def test_continuous_batching_backend_matches_padded_batches(tiny_causal_dir, tmp_path):
    """Greedy, both backends write the same completions (the prompt encoding, EOS handling and row order agree);
    sampled, the continuous backend writes the same schema and resumes."""
    kw = dict(model=str(tiny_causal_dir), batch_size=2, dtype="float32", progress=False)
    greedy = SamplingConfig(2, 12, temperature=0.0)
    generate_rollouts(_prompts(), tmp_path / "hf.jsonl", sampling=greedy, **kw)
    generate_rollouts(_prompts(), tmp_path / "cb.jsonl", sampling=greedy, backend="hf_continuous", **kw)

    def by_key(path):
        return {(r["prompt_id"], r["sample_index"]): r for r in _records(path)}

    hf, cb = by_key(tmp_path / "hf.jsonl"), by_key(tmp_path / "cb.jsonl")
    assert hf.keys() == cb.keys() and len(hf) == 6
    for key in hf:
        for field in ("completion_ids", "finish_reason", "num_tokens", "completion"):
            assert cb[key][field] == hf[key][field], (key, field)
    sampled = SamplingConfig(2, 12, temperature=0.7, top_p=0.9)
    out = tmp_path / "cb_sampled.jsonl"
    generate_rollouts(_prompts()[:2], out, sampling=sampled, backend="hf_continuous", **kw)
    generate_rollouts(_prompts(), out, sampling=sampled, backend="hf_continuous", **kw)  # resumes: q2 only
    recs = _records(out)
    assert sorted((r["prompt_id"], r["sample_index"]) for r in recs) == sorted(hf)
    for r in recs:
        assert r["num_tokens"] == len(r["completion_ids"]) <= 12
        assert (r["finish_reason"] == "stop") == (r["completion_ids"][-1] == 2)


def test_resuming_with_other_settings_is_refused(tiny_causal_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    generate_rollouts(
        _prompts(1), out, model=str(tiny_causal_dir), sampling=SamplingConfig(1, 4), dtype="float32", progress=False
    )
    with pytest.raises(ValueError, match="another --output"):
        read_done(out, str(tiny_causal_dir), SamplingConfig(1, 4, temperature=0.5))


def test_resuming_after_a_prompt_text_changed_under_its_id_is_refused(tiny_causal_dir, tmp_path):
    """Same id, other question: the stored answers must not be reused for it (nor count as done)."""
    out = tmp_path / "r.jsonl"
    kw = dict(model=str(tiny_causal_dir), sampling=SamplingConfig(1, 4), dtype="float32", progress=False)
    prompts = _prompts(2)
    generate_rollouts(prompts, out, **kw)
    before = out.read_text()
    generate_rollouts(prompts, out, **kw)  # the same prompts: nothing to do, nothing refused
    changed = [dict(prompts[0], prompt=[{"role": "user", "content": "Another question?"}]), prompts[1]]
    with pytest.raises(ValueError, match="another text"):
        generate_rollouts(changed, out, **kw)
    assert out.read_text() == before


def test_prompt_sources(tmp_path):
    builtin = load_prompts("builtin")
    by_cat = {}
    for p in builtin:
        by_cat.setdefault(p["category"], []).append(p)
    assert {"code", "length_request", "multi_turn", "rewrite", "one_word", "list", "long"} <= set(by_cat)
    assert all(len(ps) >= 30 for ps in by_cat.values())
    for p in by_cat["multi_turn"]:  # a conversation that ends on the user's turn
        assert [m["role"] for m in p["prompt"]] == ["user", "assistant", "user"]
    assert len({p["prompt"][-1]["content"] for p in builtin}) == len(builtin)  # no prompt twice
    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    assert [p["prompt"][0]["content"] for p in load_prompts(str(tmp_path / "p.txt"))] == ["first", "second"]


def test_gsm8k_questions_from_a_path(gsm8k_file):
    prompts = load_prompts(str(gsm8k_file), limit=5)
    assert len(prompts) == 5 and prompts[0]["prompt_id"] == "test-0"
    assert prompts[0]["prompt"][0]["role"] == "user" and "answer" in prompts[0]
    assert prompts[0]["prompt"][0]["content"].startswith("A baker") and prompts[0]["answer"].endswith("#### 79")


def test_gsm8k_real_file_loads():
    from conftest import shared_data_file

    prompts = load_prompts(str(shared_data_file("gsm8k", "test.jsonl")), limit=5)
    assert len(prompts) == 5 and prompts[0]["prompt_id"] == "test-0"
    assert prompts[0]["prompt"][0]["role"] == "user" and "#### " in prompts[0]["answer"]


def test_bad_sampling_settings():
    with pytest.raises(ValueError):
        SamplingConfig(num_samples=0)
    with pytest.raises(ValueError):
        SamplingConfig(max_new_tokens=0)


def test_vllm_backend_without_vllm_says_how_to_install(tmp_path):
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="lenvm-rl\\[vllm\\]"):
        generate_rollouts(_prompts(1), tmp_path / "v.jsonl", model="x", backend="vllm", progress=False)


def test_vllm_stop_on_a_generation_config_eos_keeps_one_terminal_eos(tmp_path, monkeypatch, tokenizer):
    """vLLM ends on an EOS of the generation config that is not the tokenizer's (a chat model's end of turn)."""
    import sys
    from types import ModuleType, SimpleNamespace

    from transformers import GenerationConfig

    from lenvm_rl.data import completion_ids_for

    eos, gen_eos = tokenizer.eos_token_id, 0
    assert gen_eos != eos
    model_dir = tmp_path / "generator"
    GenerationConfig(eos_token_id=[eos, gen_eos]).save_pretrained(model_dir)
    # (token_ids, finish_reason, stop_reason) as vLLM's CompletionOutput reports them
    outputs = [
        ([1000, 1001, gen_eos], "stop", gen_eos),  # stopped on the generation-config EOS
        ([1000, 1001], "stop", gen_eos),  # the same, with the stop token left out of token_ids
        ([1000, eos], "stop", None),  # the tokenizer's EOS
        ([1000, gen_eos], "stop", None),  # a generation-config EOS reported as plain EOS
        ([1000, 1001, 1002], "length", None),
    ]  # cut at max_tokens

    class FakeLLM:  # vllm.LLM: get_tokenizer() and generate(inputs, params) -> [RequestOutput]
        def __init__(self, model, dtype, seed):
            assert model == str(model_dir)

        def get_tokenizer(self):
            return tokenizer

        def generate(self, inputs, params):
            return [
                SimpleNamespace(
                    outputs=[
                        SimpleNamespace(
                            token_ids=tuple(ids),
                            finish_reason=reason,
                            stop_reason=stop,
                            text=tokenizer.decode(ids, skip_special_tokens=True),
                        )
                    ]
                )
                for (ids, reason, stop), _ in zip(outputs, inputs)
            ]

    fake = ModuleType("vllm")
    fake.LLM, fake.SamplingParams = FakeLLM, lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    out = generate_rollouts(
        _prompts(len(outputs)),
        tmp_path / "v.jsonl",
        model=str(model_dir),
        backend="vllm",
        sampling=SamplingConfig(num_samples=1, max_new_tokens=3),
        progress=False,
    )
    recs = sorted(_records(out), key=lambda r: r["prompt_id"])
    assert [r["completion_ids"] for r in recs] == [
        [1000, 1001, gen_eos],
        [1000, 1001, gen_eos],
        [1000, eos],
        [1000, gen_eos],
        [1000, 1001, 1002],
    ]
    assert [r["finish_reason"] for r in recs] == ["stop"] * 4 + ["length"]
    assert all(r["num_tokens"] == len(r["completion_ids"]) for r in recs)
    # the value-training example ends in exactly one EOS (the LenVM tokenizer's)
    assert completion_ids_for(tokenizer, recs[0]) == [1000, 1001, eos]
