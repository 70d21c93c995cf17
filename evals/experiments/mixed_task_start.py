"""Measure the `mixed` task on the starting policy: accuracy and mean correct-answer length per prompt kind.

The goals the task was built to (issue 30): accuracy >= 0.3 on every kind, and mean correct-answer lengths that
differ at least 5x between the shortest and the longest kind. The prompt wording was tuned on the validation
split only; the held-out figures are measured once. Sampling as in the GRPO experiment (T 0.7, top-p 1, its token
cap), one thread.

    python -m evals.experiments.mixed_task_start --split validation
    python -m evals.experiments.mixed_task_start --split eval     # writes evals/results/rl_mixed_lengths/start_eval.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evals.experiments.mixed_eval import EVAL_ENGINES, default_eval_engine


def goals(per_kind: dict) -> dict:
    lengths = [k["mean_correct_tokens"] for k in per_kind.values() if k["mean_correct_tokens"] is not None]
    ratio = max(lengths) / min(lengths) if len(lengths) == len(per_kind) else None
    return {
        "accuracy_at_least_0.3_each": all(k["accuracy"] >= 0.3 for k in per_kind.values()),
        "length_ratio_longest_to_shortest": ratio,
        "length_ratio_at_least_5": ratio is not None and ratio >= 5,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", choices=["validation", "eval"], default="validation")
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--samples", type=int, default=2, help="completions per prompt")
    p.add_argument("--max_new_tokens", type=int, default=160)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--limit", type=int, default=0, help="prompts per kind (0: all)")
    p.add_argument(
        "--engine",
        choices=EVAL_ENGINES,
        default=None,
        help="sampler: ctranslate2 (default where installed, as the GRPO experiment evaluates) or hf",
    )
    p.add_argument("--output_dir", default="evals/results/rl_mixed_lengths")
    a = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.experiments.mixed_eval import evaluate_mixed
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rl.tasks import MIXED_KINDS, mixed_split

    torch.set_num_threads(1)
    a.engine = a.engine or default_eval_engine()
    policy = a.policy or resolve_model(None)
    rows = mixed_split()[a.split]
    if a.limit:
        rows = [r for kind in MIXED_KINDS for r in [r for r in rows if r["kind"] == kind][: a.limit]]
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    t0 = time.time()
    per_kind, completions = evaluate_mixed(
        model, tokenizer, rows, a.samples, a.temperature, a.max_new_tokens, seed=1234, engine=a.engine
    )
    result = {
        "command": f"python -m evals.experiments.mixed_task_start --split {a.split} --samples {a.samples}",
        "engine": a.engine,
        "split": a.split,
        "prompts": len(rows),
        "samples_per_prompt": a.samples,
        "sampling": {"temperature": a.temperature, "top_k": 0, "top_p": 1.0, "max_new_tokens": a.max_new_tokens},
        "seconds": round(time.time() - t0, 1),
        "per_kind": per_kind,
        "goals": goals(per_kind),
        "completions": completions,
    }
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"start_{a.split}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("split", "seconds", "per_kind", "goals")}, indent=1))
    return result


if __name__ == "__main__":
    main()
