"""Why the refreshed critic of the `mixed` runs predicted worse than the frozen one: the refresh rate, checked off-line.

In `rl_mixed_lengths`, `lenvm_refresh` (2 AdamW steps a batch on the value head, learning rate 1e-3, fixed before
the runs) had a larger error at the prompt than the frozen critic from the first steps on, and its predictions
swung by up to ~150 tokens between consecutive batches. This replays the refresh on the critic's own rollouts of
the training prompts, without RL: batches of 2 prompts x 4 answers as GRPO draws them, the library's
``refresh_critic`` on each, at several learning rates, and after every few batches the critic's mean absolute
error at the prompt on the held-out rollouts (the experiment's ``length/critic_prompt_abs_error``, on prompts the
refresh never sees). Rate 0 is the frozen critic. The rollouts come from the starting policy, so a sound refresh
should stay near the frozen critic's error here, not fall much below it.

    python -m evals.experiments.refresh_rate_check    # ~5 min at one thread; writes refresh_rate_check.json
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CRITIC = HERE.parent / "results" / "rl_mixed_lengths" / "critic"


def padded_batch(tokenizer, records: list[dict], use_chat_template: bool):
    """Left-padded prompts then right-padded completions (with EOS when finished), as GRPO hands them over."""
    from torch.nn.utils.rnn import pad_sequence

    from lenvm_rl.critic import left_pad
    from lenvm_rl.data import completion_ids_for
    from lenvm_rl.prompts import encode_prompt

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, r["prompt"], use_chat_template) for r in records], pad)
    answers = [torch.tensor(completion_ids_for(tokenizer, r)) for r in records]
    completion_ids = pad_sequence(answers, batch_first=True, padding_value=pad)
    completion_mask = pad_sequence([torch.ones_like(a) for a in answers], batch_first=True)
    terminated = torch.tensor([r["finish_reason"] == "stop" for r in records])
    ids, mask = torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1)
    return ids, mask, prompt_ids.shape[1], completion_mask, terminated


def prompt_error(critic, heldout: list[dict]) -> float:
    """Mean |predicted - actual| answer tokens at the prompt over held-out answers that ended."""
    ended = [r for r in heldout if r["finish_reason"] == "stop"]
    predicted = critic.predict_length([r["prompt"] for r in ended]).tolist()
    return statistics.fmean(abs(p - (len(r["completion_ids"]) - 1)) for p, r in zip(predicted, ended))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--critic_dir", default=str(CRITIC), help="the experiment's critic folder (model + rollouts)")
    p.add_argument("--rates", default="0,1e-5,1e-4,1e-3")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="refresh steps a batch (the experiment's 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(HERE.parent / "results" / "rl_mixed_lengths" / "refresh_rate_check.json"))
    a = p.parse_args(argv)

    from transformers import AutoTokenizer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.data import load_rollouts
    from lenvm_rl.modeling import LengthValueModel
    from lenvm_rl.rl.trainer import refresh_critic, refreshed_parameters

    torch.manual_seed(a.seed)
    folder = Path(a.critic_dir)
    base = LengthValueModel.from_pretrained(folder / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    train, heldout = load_rollouts(folder / "rollouts_train.jsonl"), load_rollouts(folder / "rollouts_heldout.jsonl")
    by_prompt: dict = {}
    for r in train:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    rng = random.Random(a.seed)
    ids = sorted(by_prompt)
    batches = [[r for pid in rng.sample(ids, 2) for r in by_prompt[pid][:4]] for _ in range(a.batches)]
    chat = getattr(base, "use_chat_template", True)  # as LengthCritic reads it

    curves = {}
    for rate in [float(x) for x in a.rates.split(",")]:
        model = copy.deepcopy(base)
        critic = LengthCritic(model, tokenizer)
        curve = [{"batch": 0, "abs_error": prompt_error(critic, heldout)}]
        if rate > 0:
            optimizer = torch.optim.AdamW(refreshed_parameters(model), lr=rate, weight_decay=0.0)
            for b, rows in enumerate(batches, 1):
                model.train()
                ids_, mask, width, cmask, term = padded_batch(tokenizer, rows, chat)
                losses = refresh_critic(model, optimizer, ids_, mask, width, cmask, term, model.gamma, a.steps)
                model.eval()
                if b % a.every == 0:
                    curve.append({"batch": b, "abs_error": prompt_error(critic, heldout), "loss": losses})
        curves[f"{rate:g}"] = curve
        print(f"[refresh_rate_check] rate {rate:g}: " + ", ".join(f"{c['abs_error']:.1f}" for c in curve), flush=True)
    result = {
        "command": "python -m evals.experiments.refresh_rate_check",
        "critic": str(folder / "model"),
        "batches": a.batches,
        "steps_per_batch": a.steps,
        "heldout_answers_ended": sum(r["finish_reason"] == "stop" for r in heldout),
        "abs_error_at_prompt_by_rate": curves,
    }
    Path(a.output).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
