"""Benchmark: how to feed the CPU engine (CTranslate2) the quickstart's workload, side by side in one process.

Each arm is ``name:inter_threads:intra_threads:rows``: ``inter_threads`` batches in flight at once (each with
``intra_threads`` threads; with 2 they are submitted asynchronously, so one batch's tail of few rows overlaps the
other's full rows), ``rows`` rows per call. Every arm samples the same completions (the quickstart's eleven
categories, ``--prompts`` prompts x ``--samples``, cap 256, T 0.7, top-p 0.9) with the same seed, so their lengths
come from one distribution; the figure is generated tokens per second of wall time (model load off the clock).

The engine's matrix backend is chosen when the process starts: on a CPU that is not Intel's it skips MKL unless
``CT2_USE_MKL=1`` is set, so the MKL arm is a second run of this script with that variable (and ``--output``).

    python -m evals.benchmarks.engine_batching
    CT2_USE_MKL=1 python -m evals.benchmarks.engine_batching --arms mkl_64:1:2:64 --output /tmp/mkl.json
    python -m evals.benchmarks.engine_batching --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from evals.benchmarks import harness

DEFAULT_ARMS = "rows64:1:2:64,two_in_flight32:2:1:32,two_in_flight64:2:1:64,rows128:1:2:128,rows32:1:2:32"
CATEGORIES = "one_word,yes_no,short_fact,list,explain,steps,story,code,length_request,multi_turn,rewrite"


def parse_arm(spec: str) -> dict:
    try:
        name, inter, intra, rows = spec.split(":")
        return dict(name=name, inter=int(inter), intra=int(intra), rows=int(rows))
    except ValueError:
        raise SystemExit(
            f"an arm is name:inter_threads:intra_threads:rows (e.g. rows64:1:2:64); got {spec!r}"
        ) from None


def prompt_tokens(model_path: str, n: int, samples: int, seed: int = 0) -> list[list[str]]:
    """``n`` seeded built-in prompts of the quickstart's categories, chat-rendered, as engine tokens, ``samples``
    times each."""
    from transformers import AutoTokenizer

    from lenvm_rl.prompts import encode_prompt
    from lenvm_rl.rollouts import load_prompts

    tok = AutoTokenizer.from_pretrained(model_path)
    wanted = set(CATEGORIES.split(","))
    prompts = [p for p in load_prompts("builtin") if p.get("category") in wanted]
    random.Random(seed).shuffle(prompts)
    # rendered exactly as the rollouts render them
    return [tok.convert_ids_to_tokens(encode_prompt(tok, p["prompt"])) for p in prompts[:n]] * samples


def run_arm(ct2_path: Path, tokens: list[list[str]], eos: list[int], arm: dict, cap: int, seed: int) -> dict:
    import ctranslate2

    gen = ctranslate2.Generator(str(ct2_path), device="cpu", inter_threads=arm["inter"], intra_threads=arm["intra"])
    ctranslate2.set_random_seed(seed)
    kw = dict(
        max_length=cap,
        sampling_topk=0,
        sampling_temperature=0.7,
        sampling_topp=0.9,
        end_token=eos,
        return_end_token=True,
        include_prompt_in_result=False,
    )
    chunks = [tokens[i : i + arm["rows"]] for i in range(0, len(tokens), arm["rows"])]
    t0 = time.perf_counter()
    if arm["inter"] > 1:  # every chunk queued at once: the engine runs inter_threads of them side by side
        results = [f.result() for c in chunks for f in gen.generate_batch(c, asynchronous=True, **kw)]
    else:
        results = [r for c in chunks for r in gen.generate_batch(c, **kw)]
    seconds = time.perf_counter() - t0
    lengths = [len(r.sequences_ids[0]) for r in results]
    return {
        **arm,
        "seconds": seconds,
        "tokens": sum(lengths),
        "tokens_per_s": sum(lengths) / seconds,
        "mean_tokens": sum(lengths) / len(lengths),
        "cut": sum(n >= cap for n in lengths) / len(lengths),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default=DEFAULT_ARMS)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny random model, 4 prompts x 2, 8 new tokens")
    p.add_argument("--output", default="evals/results/bench_engine_batching.json")
    a = p.parse_args(argv)
    arms = [parse_arm(s) for s in a.arms.split(",") if s]
    from lenvm_rl import ct2_engine
    from lenvm_rl.defaults import resolve_model

    tmp = tempfile.mkdtemp()
    if a.tiny:
        from evals.benchmarks.rollout_sampler import tiny_model

        os.environ.setdefault("LENVM_RL_CACHE", str(Path(tmp) / "cache"))
        model_path, a.prompts, a.samples, a.max_new_tokens = tiny_model(str(Path(tmp) / "model")), 4, 2, 8
    else:
        model_path = resolve_model(None)
    from transformers import GenerationConfig

    ct2_path = ct2_engine.converted_model(model_path)  # off the clock, once
    eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    eos = sorted(eos if isinstance(eos, list) else [eos])
    tokens = prompt_tokens(model_path, a.prompts, a.samples)
    rows = []
    for arm in arms:
        rows.append(run_arm(ct2_path, tokens, eos, arm, a.max_new_tokens, a.seed))
        r = rows[-1]
        print(f"{r['name']:>18}: {r['tokens_per_s']:6.1f} tokens/s ({r['tokens']} tokens in {r['seconds']:.0f} s)")
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["vs_first"] = r["tokens_per_s"] / base
    result = {
        "command": harness.command_line("evals.benchmarks.engine_batching", argv or []),
        "machine": harness.machine_info("cpu"),
        "mkl": os.environ.get("CT2_USE_MKL", "engine default (MKL on Intel only)"),
        "completions_per_arm": len(tokens),
        "arms": rows,
    }
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
