"""Benchmark: the `mixed` task's held-out evaluation through transformers' `generate` and through CTranslate2.

The GRPO experiment on `mixed` (evals/experiments/rl_mixed_lengths.py) evaluates every run three times; this times
one evaluation both ways, side by side in one process, alternating the engines ``--repeats`` times. The CTranslate2
arm includes saving and converting the weights, as the experiment does at every evaluation. One thread by default
(the experiment's workers use one each). Figures: seconds per evaluation, generated tokens, accuracy (another draw
of the same distribution per engine).

    python -m evals.benchmarks.mixed_eval_engine                      # 6 prompts per kind x 2 samples, 2 repeats
    python -m evals.benchmarks.mixed_eval_engine --tiny --policy DIR   # CI-sized
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from evals.benchmarks.harness import machine_info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--prompts_per_kind", type=int, default=6)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max_new_tokens", type=int, default=160)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="2 prompts per kind, 8 tokens, 1 repeat")
    p.add_argument("--output", default="evals/results/bench_mixed_eval_engine.json")
    a = p.parse_args(argv)
    if a.tiny:
        a.prompts_per_kind, a.max_new_tokens, a.repeats = 2, 8, 1

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.experiments.mixed_eval import evaluate_mixed
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rl.tasks import MIXED_KINDS, mixed_split

    torch.set_num_threads(a.threads)
    policy = a.policy or resolve_model(None)
    held_out = mixed_split()["eval"]
    rows = [r for k in MIXED_KINDS for r in [r for r in held_out if r["kind"] == k][: a.prompts_per_kind]]
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    runs = {"ctranslate2": [], "hf": []}
    for _ in range(a.repeats):
        for engine in runs:
            t0 = time.time()
            per_kind, completions = evaluate_mixed(
                model, tokenizer, rows, a.samples, 0.7, a.max_new_tokens, engine=engine
            )
            runs[engine].append(
                {
                    "seconds": round(time.time() - t0, 2),
                    "tokens": sum(c["tokens"] for c in completions),
                    "accuracy": per_kind["all"]["accuracy"],
                }
            )
            print(engine, runs[engine][-1], flush=True)
    median = {e: statistics.median(r["seconds"] for r in rs) for e, rs in runs.items()}
    result = {
        "command": "python -m evals.benchmarks.mixed_eval_engine",
        "machine": machine_info("cpu"),
        "threads": a.threads,
        "completions": len(rows) * a.samples,
        "runs": runs,
        "median_seconds": median,
        "speedup_ctranslate2_vs_hf": round(median["hf"] / median["ctranslate2"], 2),
    }
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("completions", "median_seconds", "speedup_ctranslate2_vs_hf")}))
    return result


if __name__ == "__main__":
    main()
