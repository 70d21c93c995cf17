"""Experiment: GRPO on the `mixed` task, where correct answers need very different lengths (issue 30).

(Skeleton: the evaluation is used by evals/experiments/mixed_task_start.py; the arms follow.)
"""

from __future__ import annotations

KIND_METRICS = (
    "accuracy",
    "mean_tokens",
    "mean_correct_tokens",
    "tokens_after_answer",
    "truncated_share",
    "eos_only_share",
)


def evaluate_mixed(model, tokenizer, rows, samples, temperature, max_new_tokens, batch=16, seed=1234):
    """Per-kind figures of ``model`` on mixed ``rows`` x ``samples`` completions (RNG state untouched), and the
    completions. Rows are generated kind by kind, so a batch of one-word answers does not wait for a count."""
    import torch

    from lenvm_rl.rl.tasks import MIXED_KINDS, mixed_check

    was_training = model.training
    model.eval()
    out = []
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        ordered = [r for kind in MIXED_KINDS for r in rows if r["kind"] == kind]
        for begin in range(0, len(ordered), batch):
            chunk = ordered[begin : begin + batch]
            texts = [
                tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in chunk
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            gen = model.generate(
                **enc.to(model.device),
                do_sample=True,
                temperature=temperature,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
            )
            for k, ids in enumerate(gen[:, enc["input_ids"].shape[1] :].tolist()):
                row = chunk[k // samples]
                ended = tokenizer.eos_token_id in ids
                ids = ids[: ids.index(tokenizer.eos_token_id)] if ended else ids
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
    model.train(was_training)
    return summarize(out), out


def summarize(completions) -> dict:
    """Per-kind metrics (and ``all``): accuracy, mean tokens (cut answers count the cap), mean tokens of correct
    answers, tokens after the answer (correct answers), cut share, EOS-only share."""
    from lenvm_rl.rl.tasks import MIXED_KINDS

    def stats(rs):
        correct = [r for r in rs if r["correct"]]
        return {
            "n": len(rs),
            "accuracy": sum(r["correct"] for r in rs) / len(rs),
            "mean_tokens": sum(r["tokens"] for r in rs) / len(rs),
            "mean_correct_tokens": sum(r["tokens"] for r in correct) / len(correct) if correct else None,
            "tokens_after_answer": sum(r["after_answer"] for r in correct) / len(correct) if correct else None,
            "truncated_share": sum(r["truncated"] for r in rs) / len(rs),
            "eos_only_share": sum(r["eos_only"] for r in rs) / len(rs),
        }

    out = {
        k: stats([r for r in completions if r["kind"] == k])
        for k in MIXED_KINDS
        if any(r["kind"] == k for r in completions)
    }
    return out
