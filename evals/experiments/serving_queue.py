"""Length prediction for serving: order a request queue shortest-predicted-first (a simulation).

Requests are the prompts of a rollouts file; each request's true output length is a sampled completion's
length. A static-batching server takes ``--batch-size`` requests at a time; a batch runs until its longest
request ends, so shorter rows idle (padding) and every later request waits. We compare the same requests
in first-come-first-served order, ordered by the LenVM's predicted length (``LengthCritic.predict_length``),
and ordered by the true length (an oracle bound):

    padding    sum over batches of (batch max length - each row's length)
    wait       mean over requests of the decode steps until the request is done

    python -m evals.experiments.serving_queue --critic lenvm_runs/quickstart/model \
        --rollouts lenvm_runs/quickstart/rollouts_heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def simulate(lengths: list[int], batch_size: int) -> dict:
    """Padding and mean completion time (in decode steps) for requests served in the given order."""
    clock, padding, done = 0, 0, []
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        longest = max(batch)
        padding += sum(longest - n for n in batch)
        done += [clock + n for n in batch]  # a row is done when it ends, but the next batch waits for the longest
        clock += longest
    return {"padding_tokens": padding, "mean_wait_steps": sum(done) / len(done), "makespan_steps": clock}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--critic", required=True)
    p.add_argument("--rollouts", required=True, help="rollouts JSONL; one finished completion per prompt is used")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="arrival order of the requests (FCFS)")
    p.add_argument("--output", default="evals/results/serving_queue.json")
    a = p.parse_args(argv)

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.data import load_rollouts

    requests = {}
    for r in load_rollouts(a.rollouts):
        if r["finish_reason"] == "stop" and r["prompt_id"] not in requests:
            requests[r["prompt_id"]] = r
    reqs = list(requests.values())
    random.Random(a.seed).shuffle(reqs)  # arrival order
    critic = LengthCritic.from_pretrained(a.critic)
    predicted = critic.predict_length([r["prompt"] for r in reqs]).tolist()
    true = [r["num_tokens"] for r in reqs]
    by_pred = [true[i] for i in sorted(range(len(reqs)), key=lambda i: predicted[i])]
    result = {
        "requests": len(reqs),
        "batch_size": a.batch_size,
        "fcfs": simulate(true, a.batch_size),
        "lenvm_shortest_predicted_first": simulate(by_pred, a.batch_size),
        "oracle_shortest_first": simulate(sorted(true), a.batch_size),
    }
    fcfs = result["fcfs"]
    print(f"{len(reqs)} requests, static batches of {a.batch_size}\n")
    print("| order | padding tokens | mean wait (steps) | saved vs FCFS (padding / wait) |\n|---|---:|---:|---:|")
    for name in ("fcfs", "lenvm_shortest_predicted_first", "oracle_shortest_first"):
        m = result[name]
        saved = (
            f"{100 * (1 - m['padding_tokens'] / fcfs['padding_tokens']):.0f} % / "
            f"{100 * (1 - m['mean_wait_steps'] / fcfs['mean_wait_steps']):.0f} %"
        )
        print(f"| {name} | {m['padding_tokens']} | {m['mean_wait_steps']:.1f} | {saved} |")
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
