"""`lenvm eval tradeoff`: task accuracy against mean generated tokens, LenVM tilting against three ways of
spending fewer tokens without a critic.

    budget B      plain sampling; an answer longer than B tokens is cut there and counts as wrong;
                  x = mean of min(length, B). One generation at the largest budget serves every B.
    forcing B     budget forcing (s1-style): an answer not finished by B tokens gets the task's answer cue
                  appended ("\\nThe answer is") and may write ``--forcing_tokens`` more tokens; the forced
                  answer is read from the cue on. x counts every token written, the cue included. It reuses
                  the budget arm's generation (its first B tokens are a sample of the first B tokens).
    prompted N    the prompt asks for it ("Answer in at most N tokens."), plain sampling, capped and scored as
                  tilting is
    tilt beta     LenVM tilting p'(x) ~ p(x) exp(beta V(s + x)) (beta > 0 shortens), capped at the largest
                  budget; an answer cut by the cap counts as wrong
    EOS bonus b   the control for tilting (``--eos_bonuses``): the same rule with a critic that carries no length
                  information (every candidate V = -1 but EOS, whose V is 0 by definition), so EOS's weight
                  against every other candidate is multiplied by e^b and nothing else moves. Tilting favours EOS this way
                  with any critic whose values are below 0; a tilt point has to beat this curve for its values'
                  ranking of the other tokens to count

Each tilt point is compared with each curve at the same mean tokens (linear interpolation; a point outside a
curve's token range is compared with its nearest end and flagged). Every point carries a 95 % interval over
prompts; :func:`margins` gives a tilt point's margins over each curve with a 95 % interval from a paired bootstrap
over prompts: every arm answered the same prompts, so a prompt is resampled with all its answers in every arm, and
the curves are re-interpolated at the resampled tilt point's tokens. Tasks: ``opposites`` (the 48 held-out words of the GRPO task, or ``--data`` a jsonl of
``{"word", "answer": [accepted words]}`` rows; the 135M default is right about half the time and verbose),
``addition`` ("What is a + b?", exact match) and ``gsm8k`` (the last number; the 135M default cannot solve it:
for the record). ``--samples K`` samples every prompt K times. Prompts the critic was trained on (the rollouts
beside it) are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..candidates import DEFAULT_MIN_P, candidate_settings, check_min_p, recorded_sampling
from . import common

NAME = "tradeoff"
# The cue budget forcing appends: it must lead each task's answer checker to the forced answer.
CUES = {
    "addition": "\nThe answer is",
    "gsm8k": "\nThe final answer is",
    "opposites": "\nThe opposite of '{word}' is",
}


def task_rows(task: str, data: str | None, n: int, seed: int) -> tuple[list[dict], callable]:
    """Rows with a ``prompt`` and the reward's columns (``answer``, ``word``), and the reward."""
    from ..rl.tasks import (
        OPPOSITES,
        addition_dataset,
        addition_reward,
        gsm8k_reward,
        opposites_prompt,
        opposites_reward,
        opposites_split,
    )

    if task == "addition":
        return list(addition_dataset(n=4 * n, seed=seed)), addition_reward
    if task == "opposites":
        if data:
            return [{"prompt": opposites_prompt(r["word"]), **r} for r in opposites_words(data)], opposites_reward
        _, held_out = opposites_split()
        return [{"prompt": opposites_prompt(w), "word": w, "answer": OPPOSITES[w].split()} for w in held_out], (
            opposites_reward
        )
    if task == "gsm8k":
        from ..rollouts import load_prompts

        rows = load_prompts(data or "openai/gsm8k", dataset_config=None if data else "main", split="test")
        return [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows], gsm8k_reward
    raise ValueError(f"unknown task {task!r}; choose 'opposites', 'addition' or 'gsm8k'")


def opposites_words(path: str) -> list[dict]:
    """``{"word", "answer"}`` rows from a local jsonl: ``answer`` a list of accepted one-word answers (or one
    space-separated string of them), compared in lower case with the first word the answer states."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            answer = r.get("answer")
            answer = answer.split() if isinstance(answer, str) else answer
            if not isinstance(r.get("word"), str) or not r["word"].strip() or not answer:
                raise ValueError(
                    f"{path}, line {n}: an opposites row needs a 'word' (string) and an 'answer' (accepted words, "
                    f'a list or a space-separated string), e.g. {{"word": "hot", "answer": ["cold", "cool"]}}'
                )
            if any(not isinstance(w, str) or len(w.split()) != 1 for w in answer):
                raise ValueError(f"{path}, line {n}: every accepted answer must be one word, got {answer!r}")
            rows.append({"word": r["word"].strip(), "answer": [w.lower() for w in answer]})
    if not rows:
        raise ValueError(f"{path} holds no opposites rows")
    words = [r["word"] for r in rows]
    if len(set(words)) != len(words):
        raise ValueError(f"{path} lists a word twice: {sorted({w for w in words if words.count(w) > 1})}")
    return rows


def rewards(outs: list[dict], rows: list[dict], reward) -> list[float]:
    """The task reward of each answer's ``text``, with every column of its row but the prompt."""
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    return reward([o["text"] for o in outs], **columns)


def score(outs: list[dict], rows: list[dict], reward, budget: int) -> dict:
    """Accuracy (answers over the budget count as wrong) and mean of min(length, budget); ``per_answer`` keeps
    each answer's score and tokens (for the bootstrap), ``ends`` how many ended naturally within the budget, how
    many a decoding rule ended (``end == "forced"``) and how many the budget (the cap, where the budget is the cap)
    cut; ``p_eos`` summarises the generator's own probability of EOS where the answers within the budget ended.

    An answer a rule put EOS into (``rule_forced``: a hard stop) counts wrong like a cut one; one whose EOS the rule
    chose where the generator gave it less than the natural-end threshold (tilting boosts EOS) is scored on its text
    and counted as forced, so the accuracy does not depend on the threshold (lenvm_rl.ends)."""
    from ..ends import p_eos_distribution

    correct = rewards(outs, rows, reward)
    ends = [o.get("end", "natural" if o["finished"] else "cap") for o in outs]
    # ended on an EOS no rule put there: natural, or a rule's choice below the threshold (rule_forced False)
    ended = [e == "natural" or (e == "forced" and not o.get("rule_forced", True)) for e, o in zip(ends, outs)]
    within = [e and o["num_tokens"] <= budget for e, o in zip(ended, outs)]  # EOS not counted
    scored = [c if w else 0.0 for c, w in zip(correct, within)]
    tokens = [min(o["num_tokens"], budget) for o in outs]
    natural = sum(w and e == "natural" for e, w in zip(ends, within))
    forced = sum(e == "forced" and o["num_tokens"] <= budget for e, o in zip(ends, outs))
    return {
        "accuracy": float(np.mean(scored)),
        "mean_tokens": float(np.mean(tokens)),
        "over_budget": 1.0 - float(np.mean(within)),
        "ends": {"natural": natural, "forced": forced, "cap": len(outs) - natural - forced},
        "p_eos": p_eos_distribution(o.get("p_eos") for o, w in zip(outs, within) if w),
        "per_answer": {"correct": scored, "tokens": tokens},
    }


def score_forced(outs: list[dict], rows: list[dict], reward) -> dict:
    """Budget forcing: every answer counts (a forced one by its cue and tail), every written token counts."""
    correct = rewards(outs, rows, reward)
    tokens = [o["num_tokens"] for o in outs]
    return {
        "accuracy": float(np.mean(correct)),
        "mean_tokens": float(np.mean(tokens)),
        "forced": float(np.mean([o["end"] == "forced" for o in outs])),
        "ends": end_counts(outs),
        "per_answer": {"correct": list(correct), "tokens": tokens},
    }


def end_counts(outs: list[dict]) -> dict:
    """How many answers ended naturally, were forced by a rule (budget forcing's cue) or were cut by the cap."""
    return {e: sum(o.get("end") == e for o in outs) for e in ("natural", "forced", "cap")}


def with_budget_request(prompt: list[dict], n: int) -> list[dict]:
    """The prompt with "Answer in at most N tokens." added to its last user message."""
    messages = [dict(m) for m in prompt]
    messages[-1]["content"] = f"{messages[-1]['content']} Answer in at most {n} tokens."
    return messages


def budget_forced(model, tokenizer, prompts, rows, plain, budget: int, cue: str, extra: int, a) -> list[dict]:
    """Budget forcing at ``budget`` from the plain answers: unfinished by then -> first ``budget`` tokens + cue +
    up to ``extra`` sampled tokens; the answer scored is the cue and what follows it (``end = "forced"``)."""
    import torch

    from ..data import encode_prompt

    out = [dict(o) for o in plain]
    todo = [i for i, o in enumerate(plain) if not (o["finished"] and o["num_tokens"] <= budget)]
    if not todo:
        return out
    torch.manual_seed(a.seed)
    for start in range(0, len(todo), a.batch_size):
        batch = todo[start : start + a.batch_size]
        cues = [cue.format(**rows[i]) for i in batch]
        cue_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in cues]
        inputs = [
            encode_prompt(tokenizer, prompts[i], a.use_chat_template) + list(plain[i]["token_ids"][:budget]) + c
            for i, c in zip(batch, cue_ids)
        ]
        tails = common.continue_ids(model, tokenizer, inputs, extra, True, a.temperature, a.top_p)
        for i, c, c_ids, row in zip(batch, cues, cue_ids, tails):
            tail = row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
            out[i] = {
                "text": c.lstrip() + tokenizer.decode(tail, skip_special_tokens=True),
                "num_tokens": min(plain[i]["num_tokens"], budget) + len(c_ids) + len(tail),
                "end": "forced",
                "finished": True,
            }
    return out


def accuracy_at(points: list[dict], tokens: float) -> float:
    """The curve's accuracy at ``tokens`` mean tokens (linear interpolation; ends held flat)."""
    pts = sorted(points, key=lambda q: q["mean_tokens"])
    return float(np.interp(tokens, [q["mean_tokens"] for q in pts], [q["accuracy"] for q in pts]))


def compare(q: dict, curves: dict[str, list[dict]]) -> None:
    """Add each curve's accuracy at the tilt point's tokens, and whether the point lies inside its range."""
    for name, pts in curves.items():
        if not pts:
            continue
        xs = [p["mean_tokens"] for p in pts]
        q[f"{name}_accuracy_at_same_tokens"] = accuracy_at(pts, q["mean_tokens"])
        q[f"{name}_in_range"] = min(xs) <= q["mean_tokens"] <= max(xs)


def prompt_means(values: list[float], samples: int) -> np.ndarray:
    """Per-prompt means of per-answer values laid out prompt by prompt (each prompt's samples side by side)."""
    v = np.asarray(values, dtype=float)
    if samples < 1 or len(v) % samples:
        raise ValueError(f"{len(v)} answers do not split into prompts of {samples} samples")
    return v.reshape(-1, samples).mean(1)


def resamples(n_prompts: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_prompts) prompt indices drawn with replacement: one set shared by every arm makes it paired."""
    return np.random.default_rng(seed).integers(0, n_prompts, size=(n_boot, n_prompts))


def interval95(draws: np.ndarray) -> list[float]:
    return [float(x) for x in np.percentile(draws, [2.5, 97.5])]


def bootstrap_margins(q: dict, curves: dict[str, list[dict]], samples: int, n_boot: int = 2000, seed: int = 0):
    """Paired bootstrap over prompts of the tilt point ``q`` against each curve at the same mean tokens.

    Returns ``{name: draws}``: for each resample of prompts (every arm keeps its answers to the resampled
    prompts), the tilt point's accuracy minus the curve's accuracy at the tilt point's mean tokens, plus
    ``"<name>_ratio"``: the tilt accuracy over the curve's there. Which part of a curve the tilt point is compared
    with is fixed by the full sample (the segment it falls in, or the end it lies beyond), and only the points'
    values are resampled: re-sorting a flat, noisy curve in every resample would compare with whichever point
    happened to come out shortest, a selected point, and bias the interval."""
    acc, tok = (prompt_means(q["per_answer"][k], samples) for k in ("correct", "tokens"))
    idx = resamples(len(acc), n_boot, seed)
    tilt_acc, tilt_tok = acc[idx].mean(1), tok[idx].mean(1)
    out = {}
    for name, pts in curves.items():
        if not pts:
            continue
        pts = sorted(pts, key=lambda p: p["mean_tokens"])
        i, j = segment([p["mean_tokens"] for p in pts], q["mean_tokens"])
        acc_i, tok_i, acc_j, tok_j = [
            prompt_means(pts[k]["per_answer"][key], samples)[idx].mean(1)
            for k in (i, j)
            for key in ("correct", "tokens")
        ]
        span = tok_j - tok_i
        w = np.clip(np.divide(tilt_tok - tok_i, span, out=np.full(n_boot, 0.5), where=span != 0), 0.0, 1.0)
        there = acc_i + w * (acc_j - acc_i) if i != j else acc_i
        out[name] = tilt_acc - there
        out[f"{name}_ratio"] = tilt_acc / np.maximum(there, 1e-9)
    return out


def segment(xs: list[float], x: float) -> tuple[int, int]:
    """Indices ``(i, j)`` of the points of an increasing ``xs`` that bracket ``x``; ``(k, k)`` for the end ``x``
    lies beyond (or on)."""
    if x <= xs[0]:
        return 0, 0
    if x >= xs[-1]:
        return len(xs) - 1, len(xs) - 1
    i = int(np.searchsorted(xs, x, side="right")) - 1
    return i, i + 1


def accuracy_interval(q: dict, samples: int, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval over prompts of one point's accuracy (a prompt keeps all its samples)."""
    acc = prompt_means(q["per_answer"]["correct"], samples)
    return interval95(acc[resamples(len(acc), n_boot, seed)].mean(1))


def comparison(q: dict, pts: list[dict]) -> str:
    """How the tilt point meets a curve: "same tokens" inside its range; "dominates its shortest point" when the
    tilt point uses fewer tokens than any point of the curve and is more accurate than that point (the curve
    cannot get there, so its end is the fair comparison); otherwise "outside its range" (no comparison)."""
    xs = [p["mean_tokens"] for p in pts]
    if min(xs) <= q["mean_tokens"] <= max(xs):
        return "same tokens"
    shortest = min(pts, key=lambda p: p["mean_tokens"])
    if q["mean_tokens"] < shortest["mean_tokens"] and q["accuracy"] > shortest["accuracy"]:
        return "dominates its shortest point"
    return "outside its range"


def margins(q: dict, curves: dict[str, list[dict]], samples: int, n_boot: int = 2000) -> tuple[dict, dict]:
    """For a tilt point already :func:`compare`-d with ``curves``: ``margin_vs_<curve>`` (point estimate), its
    ``_ci95`` and ``<curve>_comparison`` for every non-empty curve, and the bootstrap draws they came from."""
    draws = bootstrap_margins(q, curves, samples, n_boot)
    out = {}
    for name, pts in curves.items():
        if name in draws:
            out[f"margin_vs_{name}"] = q["accuracy"] - q[f"{name}_accuracy_at_same_tokens"]
            out[f"margin_vs_{name}_ci95"] = interval95(draws[name])
            out[f"{name}_comparison"] = comparison(q, pts)
    return out, draws


def plot(result: dict, path: Path) -> Path:
    from ..plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.8))
    curves = (
        ("budget", "hard token budget B", "s", "budget"),
        ("forcing", "budget forcing at B", "D", "budget"),
        ("prompted", "prompted budget N", "v", "asked"),
        ("eos_bonus", "EOS bonus only (constant critic)", "P", "bonus"),
        ("tilt", "LenVM tilting", "o", "beta"),
        ("tilt_control", "tilting with the control critic", "x", "beta"),  # evals/experiments/tradeoff_control.py
    )
    for key, label, marker, tag in curves:
        pts = sorted(result.get(key) or [], key=lambda q: q["mean_tokens"])  # a line left to right
        if not pts:
            continue
        xs, ys = [q["mean_tokens"] for q in pts], [100 * q["accuracy"] for q in pts]
        if all("accuracy_ci95" in q for q in pts):  # 95 % intervals over prompts
            err = [[y - 100 * q["accuracy_ci95"][0] for y, q in zip(ys, pts)]]
            err.append([100 * q["accuracy_ci95"][1] - y for y, q in zip(ys, pts)])
            ax.errorbar(xs, ys, yerr=err, marker=marker, label=label, capsize=2, elinewidth=0.8)
        else:
            ax.plot(xs, ys, marker=marker, label=label)
        for q in pts:
            ax.annotate(
                f"{ {'budget': 'B', 'asked': 'N', 'bonus': 'b'}.get(tag, 'beta') }={q[tag]:g}",
                (q["mean_tokens"], 100 * q["accuracy"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set(
        xlabel="mean generated tokens",
        ylabel="accuracy (%)",
        title=f"{result['task']}: accuracy vs. tokens ({result['answers']} answers; bars: 95 % over prompts)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def markdown(result: dict) -> str:
    lines = [
        f"### Accuracy vs. tokens on {result['task']} ({result['prompts']} prompts x {result['samples']} samples, "
        f"cap {result['cap']} tokens)",
        "",
        "| method | mean tokens | accuracy | ends: natural / forced / cut | p_eos at ends: median (p5) | "
        "hard budget there | forcing there | prompted there | EOS bonus there |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]

    def there(q, name):
        key = f"{name}_accuracy_at_same_tokens"
        if key not in q:
            return "-"
        return f"{100 * q[key]:.1f} %" + ("" if q[f"{name}_in_range"] else " (end)")

    def ends(q):
        e, p = q.get("ends"), q.get("p_eos") or {}
        counts = f"{e['natural']} / {e['forced']} / {e['cap']}" if e else "-"
        return counts + (f" | {p['median']:.2f} ({p['p5']:.3f})" if p.get("n") else " | -")

    for q in result["budget"]:
        lines.append(
            f"| budget B = {q['budget']} ({100 * q['over_budget']:.0f} % over) | {q['mean_tokens']:.1f} | "
            f"{100 * q['accuracy']:.1f} % | {ends(q)} | - | - | - | - |"
        )
    for q in result["forcing"]:
        lines.append(
            f"| forcing B = {q['budget']} ({100 * q['forced']:.0f} % forced) | {q['mean_tokens']:.1f} | "
            f"{100 * q['accuracy']:.1f} % | {ends(q)} | - | - | - | - |"
        )
    for q in result["prompted"]:
        lines.append(
            f"| prompted N = {q['asked']} | {q['mean_tokens']:.1f} | {100 * q['accuracy']:.1f} % | {ends(q)} | "
            "- | - | - | - |"
        )
    for q in result.get("eos_bonus") or []:
        lines.append(
            f"| EOS bonus b = {q['bonus']:g} (constant critic) | {q['mean_tokens']:.1f} | "
            f"{100 * q['accuracy']:.1f} % | {ends(q)} | - | - | - | - |"
        )
    for q in result["tilt"]:
        lines.append(
            f"| LenVM tilt beta = {q['beta']:g} | {q['mean_tokens']:.1f} | {100 * q['accuracy']:.1f} % | {ends(q)} | "
            f"{there(q, 'budget')} | {there(q, 'forcing')} | {there(q, 'prompted')} | {there(q, 'eos_bonus')} |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class TradeoffArguments(common.EvalArguments):
    """Arguments of `lenvm eval tradeoff`."""

    task: Literal["opposites", "addition", "gsm8k"] = field(default="addition", metadata={"help": "Task to score."})
    data: str | None = field(
        default=None,
        metadata={
            "help": "gsm8k: a local test.jsonl or a dataset id (default openai/gsm8k); opposites: a local jsonl of "
            '{"word": ..., "answer": [accepted one-word answers]} rows (default: the 48 held-out words).'
        },
    )
    prompts: int = field(
        default=64, metadata={"help": "How many prompts (opposites: the first of its words, in the file's order)."}
    )
    samples: int = field(default=1, metadata={"help": "Answers sampled per prompt, in every arm."})
    budgets: str = field(
        default="8,16,24,32,48,64,96", metadata={"help": "Hard token budgets, comma-separated; the largest is the cap."}
    )
    forcing_tokens: int = field(
        default=8, metadata={"help": "Budget forcing: tokens the model may write after the answer cue."}
    )
    prompted_budgets: str = field(
        default="8,16,32",
        metadata={"help": "Budgets asked for in the prompt, comma-separated ('' leaves the prompted arm out)."},
    )
    betas: str = field(default="0,5,10,20,40", metadata={"help": "Tilting strengths, comma-separated (> 0 shortens)."})
    eos_bonuses: str = field(
        default="",
        metadata={
            "help": "The control for tilting, comma-separated nats b: the tilt rule with a constant critic, which "
            "only multiplies EOS's probability by e^b among the candidates ('' leaves it out)."
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (every arm)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (every arm)."})
    top_k: int | None = field(
        default=None, metadata={"help": "Tilting: candidates the critic scores per step (default: the tilt mode's 50)."}
    )
    min_p: float = field(
        default=DEFAULT_MIN_P,
        metadata={
            "help": "Tilting: a candidate below min_p x the most probable one is never chosen (lenvm_rl.candidates; "
            "0 = no floor, as runs before it)."
        },
    )


def parse_numbers(text: str, kind=int, what: str = "--budgets") -> list:
    try:
        return [kind(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def tilted(model, critic, tokenizer, prompts, beta: float, cap: int, sampling: dict, a, desc: str, scorer=None):
    """Tilted sampling of every prompt; ``scorer=ConstantScorer(-1.0)`` gives the EOS-bonus control (EOS keeps V = 0,
    so only its weight moves, by e^beta)."""
    return common.guided(
        model,
        critic,
        tokenizer,
        prompts,
        a.batch_size,
        desc,
        mode="tilt",
        beta=beta,
        scorer=scorer,
        top_k=a.top_k,
        min_p=a.min_p,
        max_new_tokens=cap,
        **sampling,
    )


def main(argv=None) -> dict:
    a = common.parse_args(TradeoffArguments, NAME, __doc__.split("\n")[0], argv)
    if a.tiny:
        a.prompts, a.budgets, a.betas, a.prompted_budgets, a.forcing_tokens = 4, "4,8", "0,2", "4", 2
        a.eos_bonuses = "1"
    budgets = sorted(parse_numbers(a.budgets))
    betas = parse_numbers(a.betas, float, "--betas")
    asked = parse_numbers(a.prompted_budgets, int, "--prompted_budgets")
    bonuses = parse_numbers(a.eos_bonuses, float, "--eos_bonuses")
    if any(b <= 0 for b in bonuses):
        raise ValueError(f"--eos_bonuses must be positive (nats added to EOS's log-probability), got {a.eos_bonuses!r}")
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--budgets must be positive token counts, got {a.budgets!r}")
    if a.samples < 1 or a.forcing_tokens < 1:
        raise ValueError("--samples and --forcing_tokens must be at least 1")
    check_min_p(a.min_p)
    cap = budgets[-1]
    common.setup_threads()
    from ..decoding import ConstantScorer  # torch: imported once the arguments are known to be good
    from ..ends import p_eos_distribution

    critic = common.load_critic(a.critic)
    model, tokenizer = common.load_generator(a.generator, critic)
    candidates = candidate_settings(critic, a.temperature, a.top_p, a.min_p)
    recorded = recorded_sampling(critic)
    print(f"[{NAME}] tilting candidates: {candidates.describe()}; the critic's rollouts: {recorded and recorded[0]}")
    rows, reward = task_rows(a.task, a.data, a.prompts, a.seed + 1)
    seen = common.critic_training_prompts(a.critic)
    rows = [r for r in rows if r["prompt"][-1]["content"] not in seen][: a.prompts]
    if not rows:
        raise ValueError(f"every {a.task} prompt is among the critic's training prompts; nothing left to score")
    rows = [r for r in rows for _ in range(a.samples)]  # each prompt's samples side by side
    prompts = [r["prompt"] for r in rows]
    a.use_chat_template = critic.use_chat_template  # the critic's prompt format, for every arm
    sampling = dict(temperature=a.temperature, top_p=a.top_p, seed=a.seed, use_chat_template=critic.use_chat_template)

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def save_partial(**arms) -> None:  # a long run keeps what it has measured
        (out / f"{NAME}.partial.json").write_text(json.dumps({"command": common.command_line(NAME, argv), **arms}))

    plain = common.sample_plain(model, tokenizer, prompts, cap, a.batch_size, desc="plain", **sampling)
    budget = [{"budget": b, **score(plain, rows, reward, b)} for b in budgets]
    save_partial(budget=budget)
    forcing = []
    for b in budgets[:-1]:  # at the cap itself, forcing is the cap's own answers plus cues
        outs = budget_forced(model, tokenizer, prompts, rows, plain, b, CUES[a.task], a.forcing_tokens, a)
        forcing.append({"budget": b, **score_forced(outs, rows, reward)})
    prompted = []
    for n in asked:
        outs = common.sample_plain(
            model,
            tokenizer,
            [with_budget_request(p, n) for p in prompts],
            cap,
            a.batch_size,
            desc=f"prompted N={n}",
            **sampling,
        )
        prompted.append({"asked": n, **score(outs, rows, reward, cap)})
        save_partial(budget=budget, forcing=forcing, prompted=prompted)
    eos_bonus = []
    for b in bonuses:
        outs = tilted(
            model, critic, tokenizer, prompts, b, cap, sampling, a, f"EOS bonus b={b:g}", ConstantScorer(-1.0)
        )
        eos_bonus.append({"bonus": b, **score(outs, rows, reward, cap)})
    curves = {"budget": budget, "forcing": forcing, "prompted": prompted, "eos_bonus": eos_bonus}
    save_partial(**curves)
    tilt = []
    for beta in betas:
        outs = tilted(model, critic, tokenizer, prompts, beta, cap, sampling, a, f"tilt beta={beta:g}")
        q = {"beta": beta, **score(outs, rows, reward, cap)}
        compare(q, curves)
        q.update(margins(q, curves, a.samples)[0])  # paired over prompts: what a reader compares the curves by
        tilt.append(q)
        save_partial(**curves, tilt=tilt)
        print(
            f"[tradeoff] beta={beta:g}: accuracy {100 * q['accuracy']:.1f} % at {q['mean_tokens']:.1f} tokens "
            f"(hard budget there: {100 * q['budget_accuracy_at_same_tokens']:.1f} %)"
        )
    for q in budget + forcing + prompted + eos_bonus + tilt:
        q["accuracy_ci95"] = accuracy_interval(q, a.samples)
    result = {
        "command": common.command_line(NAME, argv),
        "task": a.task,
        "critic": a.critic,
        "prompts": len(rows) // a.samples,
        "samples": a.samples,
        "answers": len(rows),
        "cap": cap,
        "forcing_cue": CUES[a.task],
        "forcing_tokens": a.forcing_tokens,
        "tilt_top_k": a.top_k,
        "candidates": {**candidates.as_dict(), "critic_rollout_sampling": recorded and recorded[0]},
        "budget": budget,
        "forcing": forcing,
        "prompted": prompted,
        "eos_bonus": eos_bonus,
        "tilt": tilt,
        "sampling": sampling,
        "plain_lengths": [o["num_tokens"] for o in plain],
        "plain_ends": {e: sum(o["end"] == e for o in plain) for e in ("natural", "cap")},
        "plain_p_eos": p_eos_distribution(o["p_eos"] for o in plain if o["end"] == "natural"),
    }
    plot(result, out / f"{NAME}.png")
    (out / f"{NAME}.partial.json").unlink(missing_ok=True)
    return common.write_outputs(out, NAME, result, markdown(result))
