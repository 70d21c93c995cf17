"""The ``ort_genai`` arm of rollout_sampler.py: samples pre-encoded prompts with ONNX Runtime GenAI on CPU.

Runs in its own virtual environment (onnxruntime-genai pins its own packages), so it imports nothing from
lenvm_rl: the caller passes everything in a JSON spec and reads a JSON result.

    /path/to/ogvenv/bin/python evals/benchmarks/ort_genai_arm.py SPEC.json OUT.json

SPEC: ``model`` (an og model folder), ``prompts`` (token-id lists, chat template already applied), ``samples``,
``max_new_tokens``, ``temperature``, ``top_p``, ``seed``, ``rows_at_once``, ``threads``, ``eos_ids``; optional
``top_k`` (default: the vocabulary size, see below).
OUT: ``completions`` (per prompt, per sample: the generated ``ids``, up to and with the first EOS, and
``finished``), ``seconds`` (sampling wall time; the model load is excluded and reported as ``load_seconds``).

How og is driven, and why:
- og's batched ``Generator`` (at most 32 rows: og's own limit), prompts right-padded with the pad id (og takes
  each row's logits at its last non-pad token). A batch runs until all its rows end, like ``generate``: og's
  continuous-batching ``Engine`` needs a PagedAttention export, which og builds for CUDA only.
- Sampling as ``generate`` does: temperature, then nucleus over the full vocabulary. og's ``top_k=0`` path
  finds the nucleus with a cheap bound that keeps more tokens than the smallest set reaching ``top_p`` (on a
  real SmolLM2 step 8 % of its draws fell outside HF's nucleus); ``top_k`` = the vocabulary size sorts exactly
  and keeps the same set as ``TopPLogitsWarper``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import onnxruntime_genai as og

MAX_ROWS = 32  # og's Generator refuses larger batches


def load_model(spec: dict):
    config = og.Config(spec["model"])
    session = {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"eos_token_id": spec["eos_ids"], "decoder": {"session_options": session}}}))
    return og.Model(config)


def sample_rows(model, rows: list[list[int]], spec: dict, pad_id: int, vocab_size: int, seed: int) -> list[dict]:
    """One padded batch through og's Generator; per row the new ids (cut after the first EOS) and finished."""
    longest = max(len(r) for r in rows)
    if len(rows) > 1 and any(r[-1] == pad_id for r in rows):
        raise SystemExit(f"a prompt ends with the pad id {pad_id}: og would take it for padding; pad differently")
    ids = np.full((len(rows), longest), pad_id, dtype=np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r  # right padding: og reads each row's logits at its last non-pad token
    sampling = spec["temperature"] > 0
    params = og.GeneratorParams(model)
    params.set_search_options(
        batch_size=len(rows),
        max_length=longest + spec["max_new_tokens"],
        do_sample=sampling,
        temperature=spec["temperature"] if sampling else 1.0,
        top_p=spec["top_p"],
        top_k=spec.get("top_k", vocab_size) if sampling else 1,
        random_seed=seed,
    )
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    eos = set(spec["eos_ids"])
    last = generator.get_next_tokens().tolist()
    out = []
    for i in range(len(rows)):
        new = generator.get_sequence(i)[longest:].tolist()
        if not eos & set(new) and last[i] in eos:
            new.append(last[i])  # og leaves the token that ends its last rows out of the sequence
        end = next((j for j, t in enumerate(new) if t in eos), None)
        out.append(
            {"ids": new[: end + 1] if end is not None else new[: spec["max_new_tokens"]], "finished": end is not None}
        )
    return out


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    if not 1 <= spec["rows_at_once"] <= MAX_ROWS:
        raise SystemExit(f"rows_at_once must be 1..{MAX_ROWS} (og's Generator limit); got {spec['rows_at_once']}")
    t0 = time.perf_counter()
    model = load_model(spec)
    genai = json.loads(open(f"{spec['model']}/genai_config.json").read())["model"]
    load_seconds = time.perf_counter() - t0
    todo = [(p, k) for p in range(len(spec["prompts"])) for k in range(spec["samples"])]  # prompt-major, as hf
    completions = [[None] * spec["samples"] for _ in spec["prompts"]]
    t0 = time.perf_counter()
    for start in range(0, len(todo), spec["rows_at_once"]):
        batch = todo[start : start + spec["rows_at_once"]]
        rows = [spec["prompts"][p] for p, _ in batch]
        seed = spec["seed"] * 1_000_003 + start
        for (p, k), done in zip(
            batch, sample_rows(model, rows, spec, genai["pad_token_id"], genai["vocab_size"], seed)
        ):
            completions[p][k] = done
    seconds = time.perf_counter() - t0
    result = {
        "completions": completions,
        "seconds": seconds,
        "load_seconds": load_seconds,
        "engine": f"onnxruntime-genai {og.__version__}, batched Generator",
        "top_k": spec.get("top_k", genai["vocab_size"]),
    }
    open(out_path, "w").write(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python ort_genai_arm.py SPEC.json OUT.json")
    main(*sys.argv[1:])
