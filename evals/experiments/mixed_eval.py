"""Held-out evaluation of a policy on the `mixed` task (issue 30): per-kind accuracy and lengths of sampled answers.

Sampled as GRPO training samples (temperature, the full vocabulary, top-p 1) through transformers' ``generate`` or
CTranslate2 (the current weights converted for the call). Used by the GRPO experiment
(``rl_mixed_lengths``), the starting-policy check (``mixed_task_start``), the wording search and the engine benchmark.
"""

from __future__ import annotations

from pathlib import Path

EVAL_ENGINES = ("hf", "ctranslate2")


def default_eval_engine() -> str:
    """CTranslate2 where it is installed (faster on CPU, same distribution), else transformers."""
    from lenvm_rl import ct2_engine

    return "ctranslate2" if ct2_engine.available() else "hf"


def evaluate_mixed(
    model, tokenizer, rows, samples, temperature, max_new_tokens, batch=16, seed=1234, engine="hf"
) -> tuple[dict, list[dict]]:
    """Per-kind figures of ``model`` on mixed ``rows`` x ``samples`` completions (torch's RNG state untouched), and
    the completions. Rows are generated kind by kind, so a batch of one-word answers does not wait for a count.

    ``engine``: ``"hf"`` (transformers' ``generate``) or ``"ctranslate2"`` (the same weights converted for this
    call and sampled with the same settings, 1.6x faster on the 2-core CPU with the conversion counted:
    ``evals/benchmarks/mixed_eval_engine.py``; the conversion is deleted afterwards)."""
    from lenvm_rl.rl.tasks import MIXED_KINDS, mixed_check
    from lenvm_rl.sampling_backends import _eos_ids

    if engine not in EVAL_ENGINES:
        raise ValueError(f"unknown evaluation engine {engine!r}; choose from {EVAL_ENGINES}")
    eos = _eos_ids(tokenizer, model)  # every generation-config EOS id, as the rollouts end answers
    ordered = [r for kind in MIXED_KINDS for r in rows if r["kind"] == kind]
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in ordered]
    sample = _sample_ct2 if engine == "ctranslate2" else _sample_hf
    generated = sample(model, tokenizer, prompts, samples, temperature, max_new_tokens, batch, seed, eos)
    out = []
    for k, ids in enumerate(generated):
        row = ordered[k // samples]
        ends = [i for i, t in enumerate(ids) if t in eos]
        ended = bool(ends)
        ids = ids[: ends[0]] if ended else ids[:max_new_tokens]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        correct, end = mixed_check(text, row["kind"], row["words"], row["answer"], row["start"], row["stop"])
        head = len(tokenizer(text[:end], add_special_tokens=False)["input_ids"])
        out.append(
            {
                "kind": row["kind"],
                "prompt": row["prompt"][0]["content"],
                "text": text,
                "correct": bool(correct),
                "tokens": len(ids) + 1 if ended else max_new_tokens,
                "truncated": not ended,
                "after_answer": max(0, len(ids) - head) if correct else None,
                "eos_only": ended and len(ids) == 0,
            }
        )
    return summarize(out), out


def _sample_hf(model, tokenizer, prompts, samples, temperature, max_new_tokens, batch, seed, eos) -> list[list[int]]:
    """``samples`` generated id lists per prompt (EOS and padding left in), prompt after prompt."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for begin in range(0, len(prompts), batch):
            enc = tokenizer(
                prompts[begin : begin + batch],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            )
            gen = model.generate(
                **enc.to(model.device),
                do_sample=True,
                temperature=temperature,
                top_k=0,  # the full vocabulary, as TRL samples in training (transformers' own default is 50)
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
            )
            out += gen[:, enc["input_ids"].shape[1] :].tolist()
    model.train(was_training)
    return out


def _sample_ct2(model, tokenizer, prompts, samples, temperature, max_new_tokens, batch, seed, eos) -> list[list[int]]:
    """As :func:`_sample_hf`, through CTranslate2: the current weights saved and converted (float32) into a scratch
    folder, sampled with the generator's own generation options, then deleted (a run evaluates a new policy each
    time, so nothing is cached)."""
    import tempfile

    from lenvm_rl import ct2_engine

    options = ct2_engine.generation_options(model.generation_config, tokenizer)  # refuses what it cannot reproduce
    with tempfile.TemporaryDirectory(prefix="rl_mixed_ct2_") as scratch:
        model.save_pretrained(f"{scratch}/hf")
        tokenizer.save_pretrained(f"{scratch}/hf")
        ct2_engine.convert(f"{scratch}/hf", f"{scratch}/ct2")
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(samples)]
        out, per_batch = [], batch * samples
        for begin in range(0, len(ids), per_batch):
            out += ct2_engine.sample_batches(
                Path(scratch) / "ct2",
                ids[begin : begin + per_batch],
                tokenizer,
                eos,
                max_new_tokens,
                temperature,
                1.0,
                seed=seed * 1_000_003 + begin,
                options=options,
            )
        ct2_engine.release()  # the scratch folder goes; so does the generator loaded from it
    return out


def summarize(completions) -> dict:
    """Per kind (and ``all``): accuracy, mean tokens (a cut answer counts the cap), mean tokens of the correct
    answers, tokens after the answer (correct answers), cut share, EOS-only share."""
    from lenvm_rl.rl.tasks import MIXED_KINDS

    def stats(rs):
        correct = [r for r in rs if r["correct"]]
        return {
            "n": len(rs),
            "accuracy": sum(r["correct"] for r in rs) / len(rs),
            "mean_tokens": sum(r["tokens"] for r in rs) / len(rs),
            "mean_correct_tokens": sum(r["tokens"] for r in correct) / len(correct) if correct else None,
            "tokens_after_answer": sum(r["after_answer"] for r in correct) / len(correct) if correct else 0.0,
            "truncated_share": sum(r["truncated"] for r in rs) / len(rs),
            "eos_only_share": sum(r["eos_only"] for r in rs) / len(rs),
        }

    kinds = {k: rs for k in MIXED_KINDS if (rs := [r for r in completions if r["kind"] == k])}
    return {k: stats(rs) for k, rs in kinds.items()} | {"all": stats(completions)}
