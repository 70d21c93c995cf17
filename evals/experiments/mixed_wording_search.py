"""Tune the `mixed` task's one-word wording on the validation split (issue 30, round 4).

Rounds 1-3 (README) sampled with transformers' `generate`, which cuts sampling to the top 50 tokens unless told
otherwise; GRPO training samples the full vocabulary. Under the training sampling the plain question was right
about a quarter of the time, below the task's 0.3 goal, so this round compares wordings of the one-word question
under that sampling: validation prompts only (the held-out prompts are measured once afterwards, by
`mixed_task_start --split eval`), 8 samples per prompt, T 0.7, top-k 0, top-p 1, cap 160, CTranslate2, 2 threads.
A worked example in the prompt uses "on" -> "off", neither a task word nor an accepted answer.

    python -m evals.experiments.mixed_wording_search    # writes evals/results/rl_mixed_lengths/wording_round4.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WORDINGS = {
    "W0": "What is the opposite of {w}? Answer with one word.",
    "W1": "What is the opposite of {w}? Answer with one word. For example, the opposite of on is off.",
    "W2": "The opposite of on is off. What is the opposite of {w}? Answer with one word.",
    "W3": "Give the opposite of {w} as a single word.",
    "W4": 'What is the opposite of the word "{w}"? Reply with only the opposite word.',
    "W5": 'The opposite of on is off. What is the opposite of the word "{w}"? Reply with only the opposite word.',
    "W6": 'What is the opposite of "{w}"? Reply with only the opposite word.',
    "W7": 'The opposite of "on" is "off". What is the opposite of "{w}"? Answer with one word.',
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--wordings", default=",".join(WORDINGS))
    p.add_argument("--output", default="evals/results/rl_mixed_lengths/wording_round4.json")
    a = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.experiments.mixed_eval import evaluate_mixed
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rl.tasks import mixed_split

    torch.set_num_threads(2)
    policy = a.policy or resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    one = [r for r in mixed_split()["validation"] if r["kind"] == "one"]
    result = {"command": "python -m evals.experiments.mixed_wording_search", "samples": a.samples, "wordings": {}}
    for name in a.wordings.split(","):
        rows = [{**r, "prompt": [{"role": "user", "content": WORDINGS[name].format(w=r["words"][0])}]} for r in one]
        per_kind, _ = evaluate_mixed(model, tokenizer, rows, a.samples, 0.7, 160, seed=99, engine="ctranslate2")
        keep = ("n", "accuracy", "mean_tokens", "mean_correct_tokens")
        result["wordings"][name] = {"wording": WORDINGS[name], **{k: per_kind["one"][k] for k in keep}}
        print(name, result["wordings"][name], flush=True)
    Path(a.output).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
