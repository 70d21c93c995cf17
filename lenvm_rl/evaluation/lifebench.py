"""`lenvm eval lifebench`: token-level LIFEBench with and without LenVM guidance, on the same generator.

Each LIFEBench task is a template with ``{word_count_type}`` and ``{word_count}``; the token-level variant asks
for "<equal to | at most | at least> T tokens" and counts the generator's tokens (EOS not counted). Arms:

    plain            the generator alone; the prompt states the constraint
    lenvm            LenVM-guided decoding with our rules (lenvm_rl.decoding)
    lenvm_extreme    the reference code's rules for At Most / At Least (always shortest / longest)

Metrics (``../shared/data/README.md``): ``LD = (L_out - T) / T``; ``LS = 100 exp(5 LD)`` below the target for
Equal To / At Least, ``100 exp(-2 LD)`` above it for Equal To / At Most, else 100; averaged per target, then
over targets. Every arm stops at ``--max-new-factor`` x T tokens (default 2), so LD is at most +1 and an
Equal To / At Most answer scores at least 100 exp(-2) = 13.5: the cap can only flatter the plain arm.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from . import common

NAME = "lifebench"
HUB_ID = "LIFEBench/LIFEBench"
MODES = ("equal", "at_most", "at_least")
WORDING = {"en": {"equal": "equal to", "at_most": "at most", "at_least": "at least"},
           "cn": {"equal": "等于", "at_most": "最多", "at_least": "至少"}}
ARMS = ("plain", "lenvm", "lenvm_extreme")


def length_deviation(n_out: int, target: int) -> float:
    return (n_out - target) / target


def length_score(ld: float, mode: str) -> float:
    """LIFEBench's Length Score for one answer (100 = constraint met)."""
    if ld < 0 and mode in ("equal", "at_least"):
        return 100.0 * math.exp(5.0 * ld)
    if ld > 0 and mode in ("equal", "at_most"):
        return 100.0 * math.exp(-2.0 * ld)
    return 100.0


def load_tasks(source: str, langs: set[str], limit: int | None = None, per_category: int | None = None) -> list[dict]:
    """LIFEBench rows from a local ``.jsonl`` or the hub id; Summarization rows are skipped (as in the local file)."""
    if Path(source).is_file():
        rows = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()]
    else:
        from datasets import load_dataset

        rows = list(load_dataset(source, split="train"))
    rows = [r for r in rows if r.get("lang") in langs and str(r.get("category", "")).lower() != "summarization"]
    if not rows:
        raise ValueError(f"{source} has no rows in languages {sorted(langs)}")
    for r in rows:
        if "{word_count_type}" not in r["task"] or "{word_count}" not in r["task"]:
            raise ValueError(f"LIFEBench row {r.get('id')} lacks the {{word_count_type}} / {{word_count}} placeholders")
    if per_category:  # the first N of each (lang, category), in file order
        seen = Counter()
        kept = []
        for r in rows:
            seen[r["lang"], r.get("category")] += 1
            if seen[r["lang"], r.get("category")] <= per_category:
                kept.append(r)
        rows = kept
    return rows[:limit] if limit else rows


def token_prompt(task: str, lang: str, mode: str, target: int) -> str:
    """The task with a token-level requirement: '... must be at most 64 tokens long.'"""
    text = task.replace("{word_count} words", "{word_count} tokens").replace("{word_count}字", "{word_count}个token")
    return text.replace("{word_count_type}", WORDING[lang][mode]).replace("{word_count}", str(target))


def check_not_trained_on(critic_path: str, tasks: list[dict]) -> None:
    """The critic must never have seen LIFEBench's prompts (checked against the rollouts beside it)."""
    heads = {t["task"].split("{word_count_type}")[0][:200] for t in tasks}
    seen = common.critic_training_prompts(critic_path)
    if any(text[:200] in heads or any(text.startswith(h) for h in heads) for text in seen):
        raise ValueError(f"The critic at {critic_path} was trained on LIFEBench prompts; train it on other prompts.")


def aggregate(rows: list[dict]) -> dict:
    """Mean LS and mean |LD| per target, then over targets (the benchmark's averaging)."""
    by_target = {}
    for t in sorted({r["target"] for r in rows}):
        sel = [r for r in rows if r["target"] == t]
        by_target[t] = {"ls": float(np.mean([r["ls"] for r in sel])),
                        "abs_ld": float(np.mean([abs(r["ld"]) for r in sel])),
                        "mean_tokens": float(np.mean([r["num_tokens"] for r in sel])),
                        "finished": float(np.mean([r["finished"] for r in sel]))}
    return {"ls": float(np.mean([v["ls"] for v in by_target.values()])),
            "abs_ld": float(np.mean([v["abs_ld"] for v in by_target.values()])), "by_target": by_target}


def plot(summary: dict, path: Path) -> Path:
    from ..plots import plt, save_figure

    fig, axes = plt.subplots(1, len(MODES), figsize=(5 * len(MODES), 4), sharey=True)
    for ax, mode in zip(axes, MODES):
        for arm, per_mode in summary.items():
            if mode in per_mode:
                bt = per_mode[mode]["by_target"]
                ax.plot(list(bt), [v["ls"] for v in bt.values()], marker="o", label=arm)
        ax.set_xscale("log", base=2)
        ax.set(title=f"{mode.replace('_', ' ')}", xlabel="target tokens", ylim=(0, 105))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Length Score (100 = met)")
    axes[-1].legend()
    fig.suptitle("token-level LIFEBench: Length Score by target")
    return save_figure(fig, path)


def markdown(result: dict) -> str:
    lines = [f"### Token-level LIFEBench ({result['tasks']} tasks, lang {result['langs']}, targets "
             f"{result['targets']}, generator {result['generator']})", "",
             "| mode | arm | LS | mean abs(LD) | mean tokens (per target) |", "|---|---|---:|---:|---|"]
    for mode in MODES:
        for arm, per_mode in result["summary"].items():
            if mode in per_mode:
                m = per_mode[mode]
                toks = ", ".join(f"{t}: {v['mean_tokens']:.0f}" for t, v in m["by_target"].items())
                lines.append(f"| {mode} | {arm} | {m['ls']:.1f} | {100 * m['abs_ld']:.0f} % | {toks} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = common.base_parser(NAME, __doc__.split("\n")[0])
    p.add_argument("--data", default=HUB_ID, help="LIFEBench: a local .jsonl (e.g. ../shared/data/lifebench/"
                                                  "data_lite_no_summary.jsonl) or the hub id")
    p.add_argument("--langs", default="en", help="comma-separated: en, cn (the default generator is English-only)")
    p.add_argument("--targets", default="32,64,128", help="target token counts (LIFEBench uses 32-1024 and more)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--limit", type=int, default=None, help="first N tasks only")
    p.add_argument("--per-category", type=int, default=None, help="first N tasks of each language and category")
    p.add_argument("--max-new-factor", type=float, default=2.0, help="generation cap, in multiples of the target")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    a = p.parse_args(argv)
    if a.tiny:
        a.targets, a.limit = "6", 2
    common.setup_threads()
    targets = [int(t) for t in a.targets.split(",")]
    modes, arms = a.modes.split(","), a.arms.split(",")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {MODES}")
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")

    tasks = load_tasks(a.data, set(a.langs.split(",")), a.limit, a.per_category)
    critic = common.load_critic(a.critic)
    check_not_trained_on(a.critic, tasks)
    model, tokenizer = common.load_generator(a.generator, critic)
    sampling = dict(temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                    use_chat_template=critic.use_chat_template)  # the critic's prompt format, for both arms
    rows = []
    for mode in modes:
        for target in targets:
            prompts = [[{"role": "user", "content": token_prompt(t["task"], t["lang"], mode, target)}] for t in tasks]
            cap = math.ceil(a.max_new_factor * target)
            for arm in arms:
                if arm == "lenvm_extreme" and mode == "equal":
                    continue  # one rule for Equal To
                desc = f"{arm} {mode} {target}"
                if arm == "plain":
                    outs = common.sample_plain(model, tokenizer, prompts, cap, a.batch_size, desc=desc, **sampling)
                else:
                    outs = common.guided(model, critic, tokenizer, prompts, a.batch_size, desc, mode=mode,
                                         target_tokens=target, max_new_tokens=cap,
                                         rule="extreme" if arm == "lenvm_extreme" else "soft", **sampling)
                for t, o in zip(tasks, outs):
                    ld = length_deviation(o["num_tokens"], target)
                    rows.append({"id": t.get("id"), "lang": t["lang"], "category": t.get("category"), "mode": mode,
                                 "target": target, "arm": arm, "num_tokens": o["num_tokens"],
                                 "finished": o["finished"], "end": o["end"], "ld": ld, "ls": length_score(ld, mode)})
                done = [r for r in rows if r["arm"] == arm and r["mode"] == mode and r["target"] == target]
                print(f"[lifebench] {desc}: mean tokens {np.mean([r['num_tokens'] for r in done]):.1f}, "
                      f"LS {np.mean([r['ls'] for r in done]):.1f}")

    summary = {arm: {mode: aggregate([r for r in rows if r["arm"] == arm and r["mode"] == mode])
                     for mode in modes if any(r["arm"] == arm and r["mode"] == mode for r in rows)} for arm in arms}
    result = {"command": common.command_line(NAME, argv), "critic": a.critic, "generator": a.generator or "default",
              "data": a.data, "langs": a.langs, "tasks": len(tasks), "targets": targets, "summary": summary,
              "rows": rows}
    out = Path(a.output_dir)
    plot(summary, out / f"{NAME}.png")
    return common.write_outputs(out, NAME, result, markdown(result))
