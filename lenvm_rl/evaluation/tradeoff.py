"""`lenvm eval tradeoff`: task accuracy against mean generated tokens, LenVM tilting vs. a hard token budget.

    budget B     plain sampling; an answer longer than B tokens is cut there and counts as wrong;
                 x = mean of min(length, B). One generation at the largest budget serves every B.
    tilt beta    LenVM tilting p'(x) ~ p(x) exp(beta V(s + x)) (beta > 0 shortens), capped at the largest
                 budget with the same rule

Tasks: ``addition`` ("What is a + b?", exact match; the 135M default solves about half, so the curve means
something) and ``gsm8k`` (exact match on the final number; the 135M default cannot solve it: for the record).
Prompts the critic was trained on (the rollouts beside it) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from . import common

NAME = "tradeoff"


def task_rows(task: str, data: str | None, n: int, seed: int) -> tuple[list[dict], callable]:
    from ..rl.tasks import addition_dataset, addition_reward, gsm8k_reward

    if task == "addition":
        return list(addition_dataset(n=4 * n, seed=seed)), addition_reward
    if task == "gsm8k":
        from ..rollouts import load_prompts

        rows = load_prompts(data or "openai/gsm8k", dataset_config=None if data else "main", split="test")
        return [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows], gsm8k_reward
    raise ValueError(f"unknown task {task!r}; choose 'addition' or 'gsm8k'")


def score(outs: list[dict], rows: list[dict], reward, budget: int) -> dict:
    """Accuracy (answers over the budget count as wrong) and mean of min(length, budget)."""
    correct = reward([o["text"] for o in outs], [r["answer"] for r in rows])
    within = [o["finished"] and o["num_tokens"] <= budget for o in outs]  # EOS not counted
    return {
        "accuracy": float(np.mean([c if w else 0.0 for c, w in zip(correct, within)])),
        "mean_tokens": float(np.mean([min(o["num_tokens"], budget) for o in outs])),
        "over_budget": 1.0 - float(np.mean(within)),
    }


def accuracy_at(points: list[dict], tokens: float) -> float:
    """The budget curve's accuracy at ``tokens`` mean tokens (linear interpolation; ends held flat)."""
    pts = sorted(points, key=lambda q: q["mean_tokens"])
    return float(np.interp(tokens, [q["mean_tokens"] for q in pts], [q["accuracy"] for q in pts]))


def plot(result: dict, path: Path) -> Path:
    from ..plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    b, t = result["budget"], result["tilt"]
    ax.plot([q["mean_tokens"] for q in b], [100 * q["accuracy"] for q in b], marker="s", label="hard token budget B")
    for q in b:
        ax.annotate(
            f"B={q['budget']}",
            (q["mean_tokens"], 100 * q["accuracy"]),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
        )
    ax.plot([q["mean_tokens"] for q in t], [100 * q["accuracy"] for q in t], marker="o", label="LenVM tilting")
    for q in t:
        ax.annotate(
            f"beta={q['beta']:g}",
            (q["mean_tokens"], 100 * q["accuracy"]),
            fontsize=7,
            xytext=(3, 4),
            textcoords="offset points",
        )
    ax.set(xlabel="mean generated tokens", ylabel="accuracy (%)", title=f"{result['task']}: accuracy vs. tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def markdown(result: dict) -> str:
    lines = [
        f"### Accuracy vs. tokens on {result['task']} ({result['prompts']} prompts, cap {result['cap']} tokens)",
        "",
        "| method | mean tokens | accuracy | budget curve at the same tokens |",
        "|---|---:|---:|---:|",
    ]
    for q in result["budget"]:
        lines.append(f"| budget B = {q['budget']} | {q['mean_tokens']:.1f} | {100 * q['accuracy']:.1f} % | - |")
    for q in result["tilt"]:
        lines.append(
            f"| LenVM tilt beta = {q['beta']:g} | {q['mean_tokens']:.1f} | {100 * q['accuracy']:.1f} % | "
            f"{100 * q['budget_accuracy_at_same_tokens']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class TradeoffArguments(common.EvalArguments):
    """Arguments of `lenvm eval tradeoff`."""

    task: Literal["addition", "gsm8k"] = field(default="addition", metadata={"help": "Task to score."})
    data: str | None = field(
        default=None, metadata={"help": "gsm8k: a local test.jsonl or a dataset id (default openai/gsm8k)."}
    )
    prompts: int = field(default=64, metadata={"help": "How many prompts."})
    budgets: str = field(
        default="8,16,24,32,48,64,96", metadata={"help": "Hard token budgets, comma-separated; the largest is the cap."}
    )
    betas: str = field(default="0,5,10,20,40", metadata={"help": "Tilting strengths, comma-separated (> 0 shortens)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (both arms)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (both arms)."})


def main(argv=None) -> dict:
    a = common.parse_args(TradeoffArguments, NAME, __doc__.split("\n")[0], argv)
    if a.tiny:
        a.prompts, a.budgets, a.betas = 4, "4,8", "0,2"
    common.setup_threads()
    budgets = sorted(int(b) for b in a.budgets.split(","))
    betas = [float(b) for b in a.betas.split(",")]
    cap = budgets[-1]

    critic = common.load_critic(a.critic)
    model, tokenizer = common.load_generator(a.generator, critic)
    rows, reward = task_rows(a.task, a.data, a.prompts, a.seed + 1)
    seen = common.critic_training_prompts(a.critic)
    rows = [r for r in rows if r["prompt"][-1]["content"] not in seen][: a.prompts]
    prompts = [r["prompt"] for r in rows]
    sampling = dict(
        temperature=a.temperature, top_p=a.top_p, seed=a.seed, use_chat_template=critic.use_chat_template
    )  # the critic's prompt format, for both arms

    plain = common.sample_plain(model, tokenizer, prompts, cap, a.batch_size, desc="plain", **sampling)
    budget = [{"budget": b, **score(plain, rows, reward, b)} for b in budgets]
    tilt = []
    for beta in betas:
        outs = common.guided(
            model,
            critic,
            tokenizer,
            prompts,
            a.batch_size,
            f"tilt beta={beta:g}",
            mode="tilt",
            beta=beta,
            max_new_tokens=cap,
            **sampling,
        )
        q = {"beta": beta, **score(outs, rows, reward, cap)}
        q["budget_accuracy_at_same_tokens"] = accuracy_at(budget, q["mean_tokens"])
        tilt.append(q)
        print(
            f"[tradeoff] beta={beta:g}: accuracy {100 * q['accuracy']:.1f} % at {q['mean_tokens']:.1f} tokens "
            f"(budget curve there: {100 * q['budget_accuracy_at_same_tokens']:.1f} %)"
        )
    result = {
        "command": common.command_line(NAME, argv),
        "task": a.task,
        "critic": a.critic,
        "prompts": len(rows),
        "cap": cap,
        "budget": budget,
        "tilt": tilt,
        "sampling": sampling,
        "plain_lengths": [o["num_tokens"] for o in plain],
    }
    out = Path(a.output_dir)
    plot(result, out / f"{NAME}.png")
    return common.write_outputs(out, NAME, result, markdown(result))
