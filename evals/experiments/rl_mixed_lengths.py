"""Experiment: GRPO on the `mixed` task, where correct answers need very different lengths (issue 30).

Task `mixed` (lenvm_rl.rl.tasks): one-word opposites and counts from 1 to N = 10..30, strict first-answer
checkers. A fixed budget fits one kind and not the other; a value model predicts per prompt and per prefix. Policy: the
embedded SmolLM2-135M-Instruct. Arms (each = the task reward plus a length term):

    task              the task reward alone
    l1_max            + L1-Max c * clip(0.5 + (n - L) / 2n, 0, 1), at a budget n that fits the short kind (coef = n)
                        and at one that fits the long kind
    kimi              + Kimi k1.5's gated group length reward (coef = weight)
    shorter_better    + ShorterBetter's -beta |L - L_shortest correct of the group| (coef = beta)
    lenvm_seq         + c * beta * critic_length_return (the LenVM at the sequence level, coef = beta)
    lenvm_relative    LengthShapedGRPOTrainer, `relative`, frozen critic (coef = alpha)
    lenvm_refresh     the same with critic_refresh_steps (the critic follows the policy)

The LenVM is trained first (the quickstart pipeline) on the starting policy's answers to the training prompts.
Every run is evaluated on the held-out prompts (48 + 36 x `eval_samples`, fixed seed, T 0.7, the same cap) at
the steps in EVAL_STEPS; step 0 is the shared starting policy. Per kind: accuracy, mean tokens, tokens after the
answer, cut share, EOS-only share. Two single-thread workers share the queue; each run writes runs/<job>.json as
it ends and the report is rewritten after every run, so a rerun resumes; a run also checkpoints every
``--save_steps`` steps (policy, optimizer, RNG, a refreshed critic, the evaluations so far), so a killed run goes on
from its last checkpoint rather than from step 0. Outputs: results.json, summary.md (the
criterion fixed in README.md before the runs), curves.png (learning curves per kind), pareto.png, audit_<arm>.jsonl.

    python -m evals.experiments.rl_mixed_lengths                 # the full experiment (see README for its time)
    python -m evals.experiments.rl_mixed_lengths --time_step     # time one step and one evaluation; print the estimate
    python -m evals.experiments.rl_mixed_lengths --tiny          # CI-sized: a tiny random policy, in-process
    python -m evals.experiments.rl_mixed_lengths --report_only   # the report of the runs finished so far
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from evals.experiments.mixed_audit import audit_summary
from evals.experiments.mixed_eval import EVAL_ENGINES, default_eval_engine, evaluate_mixed
from evals.experiments.rl_length_shaping import claim

EVAL_STEPS = (10, 20, 40)
BUDGETS = {"short": 16, "long": 128}  # L1-Max budgets: fits a one-word answer / fits a 30-number count
REFRESH = {"critic_refresh_steps": 2, "critic_refresh_learning_rate": 1e-3, "critic_refresh_layers": 0}
# (arm, coef): the LenVM arms and the two baselines named before the runs get 3 seeds, the rest one.
ARMS = (
    ("task", 0.0),
    ("l1_max", float(BUDGETS["short"])),
    ("l1_max", float(BUDGETS["long"])),
    ("kimi", 1.0),
    ("shorter_better", 0.01),
    ("lenvm_seq", 1.0),
    ("lenvm_relative", 1.0),
    ("lenvm_refresh", 1.0),
)
THREE_SEEDS = (("lenvm_relative", 1.0), ("lenvm_refresh", 1.0), ("l1_max", float(BUDGETS["short"])), ("kimi", 1.0))
JOBS = [(arm, coef, 0) for arm, coef in ARMS] + [(arm, coef, s) for s in (1, 2) for arm, coef in THREE_SEEDS]
LENVM_ARMS = ("lenvm_relative", "lenvm_refresh")
KIND_METRICS = ("accuracy", "mean_tokens", "tokens_after_answer", "truncated_share", "eos_only_share")


def recorded_engine(record: dict) -> str:
    """The evaluation engine a start, run or progress file was made with (files from before the option: hf)."""
    return record.get("eval_engine", "hf")


def job_name(arm, coef, seed) -> str:
    return f"{arm}_c{coef:g}_s{seed}"


# ----------------------------------------------------------------------------------------- one run
def build_trainer(arm: str, coef: float, seed: int, a, policy: str, critic_path: str, rows: dict, callbacks=()):
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.defaults import native_bf16
    from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
    from lenvm_rl.rl.rewards import (
        get_kimi_length_reward,
        get_l1_max_length_reward,
        get_lenvm_seq_reward,
        get_shorter_better_reward,
    )
    from lenvm_rl.rl.tasks import mixed_dataset, mixed_reward

    tokenizer = AutoTokenizer.from_pretrained(policy)
    common = dict(
        output_dir=str(Path(a.output_dir) / "runs" / job_name(arm, coef, seed)),
        per_device_train_batch_size=a.batch,
        num_generations=a.num_generations,
        max_completion_length=a.max_new_tokens,
        max_steps=a.steps,
        learning_rate=a.learning_rate,
        temperature=a.temperature,
        beta=0.0,
        use_cpu=True,
        bf16=native_bf16() and not a.tiny,
        report_to=[],
        save_strategy="steps" if a.save_steps else "no",
        save_steps=a.save_steps or 500,
        save_total_limit=1,
        logging_steps=1,
        seed=seed,
        disable_tqdm=True,
    )
    rewards = [mixed_reward]
    if arm == "l1_max":
        rewards.append(get_l1_max_length_reward(mixed_reward, budget=int(coef)))
    elif arm == "kimi":
        rewards.append(get_kimi_length_reward(mixed_reward))
    elif arm == "shorter_better":
        rewards.append(get_shorter_better_reward(mixed_reward, beta=coef))
    elif arm == "lenvm_seq":
        critic = LengthCritic.from_pretrained(critic_path, device="cpu")
        rewards.append(get_lenvm_seq_reward(mixed_reward, beta=coef, critic=critic))
    elif arm not in ("task", *LENVM_ARMS):
        raise ValueError(f"unknown arm {arm!r}; the arms are {sorted({a for a, _ in ARMS})}")
    kwargs = dict(
        model=policy,
        reward_funcs=rewards,
        callbacks=list(callbacks),
        processing_class=tokenizer,
        train_dataset=mixed_dataset(rows["train"], repeats=a.repeats, seed=seed),
    )
    if arm in LENVM_ARMS:
        args = LengthShapedGRPOConfig(
            **common,
            critic_model_path=critic_path,
            length_shaping="relative",
            length_coef=coef,
            length_gate_reward="mixed_reward",
            **(REFRESH if arm == "lenvm_refresh" else {}),
        )
        return LengthShapedGRPOTrainer(args=args, **kwargs), tokenizer
    weights = [1.0, coef] if arm == "kimi" else None
    return GRPOTrainer(args=GRPOConfig(**common, reward_weights=weights), **kwargs), tokenizer


def run_job(arm: str, coef: float, seed: int, a, policy: str, critic_path: str, rows: dict) -> dict:
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    run_dir = Path(a.output_dir) / "runs" / job_name(arm, coef, seed)
    progress_file = run_dir / "progress.json"  # the evaluations and log up to the last checkpoint
    last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    progress = json.loads(progress_file.read_text()) if last and progress_file.is_file() else None
    if last and (progress is None or progress["step"] != int(Path(last).name.split("-")[1])):
        print(f"[rl_mixed_lengths] {run_dir.name}: {last} has no matching progress.json; starting again", flush=True)
        last, progress = None, None  # killed between writing the checkpoint and its progress
    progress = progress or {"step": 0, "evals": [], "train_log": [], "seconds": 0, "eval_engine": a.eval_engine}
    if recorded_engine(progress) != a.eval_engine:
        raise SystemExit(
            f"{run_dir} was evaluated with {recorded_engine(progress)!r} up to step {progress['step']}; rerun "
            f"with --eval_engine {recorded_engine(progress)} (one engine per experiment), or delete {run_dir}."
        )
    evals, train_log = progress["evals"], progress["train_log"]
    holder = {}
    t0 = time.time() - progress["seconds"]

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in eval_steps(a):
                per_kind, completions = evaluate_mixed(
                    model,
                    holder["tokenizer"],
                    rows["eval"],
                    a.eval_samples,
                    a.temperature,
                    a.max_new_tokens,
                    engine=a.eval_engine,
                )
                evals.append({"step": state.global_step, "per_kind": per_kind})
                if state.global_step == a.steps:
                    evals[-1]["completions"] = audit_sample(completions, a.audit)

        def on_save(self, args, state, control, **kw):
            done = {
                "step": state.global_step,
                "evals": evals,
                "train_log": train_log,
                "seconds": time.time() - t0,
                "eval_engine": a.eval_engine,
            }
            atomic_write(progress_file, json.dumps(done))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "rewards/mixed_reward/mean" in logs:
                train_log.append(
                    {
                        "step": state.global_step,
                        "accuracy": logs["rewards/mixed_reward/mean"],
                        "mean_tokens": logs["completions/mean_length"],
                        "predicted": logs.get("length/predicted_remaining_at_prompt"),
                        "critic_prompt_abs_error": logs.get("length/critic_prompt_abs_error"),
                        "critic_refresh_loss_first": logs.get("length/critic_refresh_loss_first"),
                        "critic_refresh_loss_last": logs.get("length/critic_refresh_loss_last"),
                    }
                )

    trainer, holder["tokenizer"] = build_trainer(arm, coef, seed, a, policy, critic_path, rows, [Probe()])
    if last:
        print(f"[rl_mixed_lengths] {job_name(arm, coef, seed)}: resuming from {last}", flush=True)
    trainer.train(resume_from_checkpoint=last)
    result = {
        "arm": arm,
        "coef": coef,
        "seed": seed,
        "seconds": round(time.time() - t0, 1),
        "resumed_from_step": progress["step"] or None,
        "eval_engine": a.eval_engine,
        "evals": evals,
        "train_log": train_log,
    }
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints are GBs; the result file holds what the report needs
    return result


def eval_steps(a) -> tuple[int, ...]:
    return tuple(s for s in EVAL_STEPS if s < a.steps) + (a.steps,) if not a.tiny else (1, a.steps)


def audit_sample(completions: list[dict], n: int) -> list[dict]:
    """``n`` completions spread over the kinds (round robin), to audit the checkers by hand."""
    by_kind: dict = {}
    for c in completions:
        by_kind.setdefault(c["kind"], []).append(c)
    out, queues = [], [list(v) for v in by_kind.values()]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


# ----------------------------------------------------------------------------------------- setup
def train_critic(out: Path, policy: str, train_rows: list[dict], a) -> tuple[str, dict]:
    from lenvm_rl.quickstart import QuickstartConfig, run_quickstart

    prompts = out / "critic_prompts.jsonl"
    texts = list(dict.fromkeys(r["prompt"][0]["content"] for r in train_rows))  # repeated count prompts once
    with open(prompts, "w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"prompt_id": f"mixed-{i}", "prompt": text}) + "\n")
    cfg = QuickstartConfig(
        output_dir=str(out / "critic"),
        model=policy,
        prompts=str(prompts),
        categories="",
        eval_prompts_per_category=4 if a.tiny else 16,
        train_samples=2 if a.tiny else 4,
        eval_samples=2 if a.tiny else 4,
        max_new_tokens=48 if a.tiny else a.max_new_tokens,  # the tiny policy must end some held-out answers
        temperature=a.temperature,
        top_p=1.0,
        num_train_epochs=1 if a.tiny else 3,
        max_length=256,
        bf16=None if not a.tiny else False,
    )  # cut answers are censored (the default), as the refresh censors them
    report = run_quickstart(cfg)
    return str(out / "critic" / "model"), report["length_prediction"]


def work(a, policy: str, critic_path: str, rows: dict, start: dict) -> None:
    """Run every unclaimed job of the queue; each writes ``runs/<job>.json`` when it ends, then the report."""
    import torch

    torch.set_num_threads(1 if not a.tiny else torch.get_num_threads())
    runs = Path(a.output_dir) / "runs"
    for arm, coef, seed in jobs(a):
        name = job_name(arm, coef, seed)
        if (runs / f"{name}.json").is_file() or not claim(runs / f"{name}.claim"):
            continue
        print(f"[rl_mixed_lengths] worker {os.getpid()}: {name}", flush=True)
        result = run_job(arm, coef, seed, a, policy, critic_path, rows)
        atomic_write(runs / f"{name}.json", json.dumps(result, indent=1))
        report(a, start)  # results as runs finish


def jobs(a):
    wanted = a.arms.split(",")
    if a.tiny:
        return [(arm, {"l1_max": coef / 8}.get(arm, coef), 0) for arm, coef in ARMS if arm in wanted]
    return [j for j in JOBS if j[0] in wanted]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- report
def collect(a, start: dict) -> list[dict]:
    """One row per (run, evaluation step, kind); step 0 is the shared starting policy."""
    rows = []
    for path in sorted((Path(a.output_dir) / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        if recorded_engine(run) != recorded_engine(start):
            raise SystemExit(
                f"{path} was evaluated with {recorded_engine(run)!r}, the starting policy with "
                f"{recorded_engine(start)!r}: one engine per experiment (rerun that run, or the start)."
            )
        for ev in [{"step": 0, "per_kind": start["per_kind"]}] + run["evals"]:
            for kind, m in ev["per_kind"].items():
                rows.append(
                    {"arm": run["arm"], "coef": run["coef"], "seed": run["seed"], "step": ev["step"], "kind": kind, **m}
                )
    return rows


def table_at(rows: list[dict], step: int) -> dict:
    """(arm, coef, kind) -> mean and std over seeds of every metric at ``step``."""
    cells: dict = {}
    for r in rows:
        if r["step"] == step:
            cells.setdefault((r["arm"], r["coef"], r["kind"]), []).append(r)
    out = {}
    for key, rs in sorted(cells.items()):
        stats = {"n_seeds": len(rs)}
        for m in KIND_METRICS:
            xs = [r[m] for r in rs]
            stats[m] = statistics.mean(xs)
            stats[m + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out[key] = stats
    return out


def first_step_at(rows, arm, coef, start_all, steps) -> int | None:
    """The first evaluation step where the 3-seed mean (all kinds) has at most 0.8x the starting tokens at an
    accuracy no lower than the start's; None if never."""
    for step in steps:
        cell = table_at(rows, step).get((arm, coef, "all"))
        if cell and cell["mean_tokens"] <= 0.8 * start_all["mean_tokens"] and cell["accuracy"] >= start_all["accuracy"]:
            return step
    return None


def verdict(rows: list[dict], a, start: dict) -> list[str]:
    """The criterion fixed in evals/results/rl_mixed_lengths/README.md before the runs, on the 3-seed means."""
    from lenvm_rl.rl.tasks import MIXED_KINDS

    final = table_at(rows, a.steps)
    short_kind, long_kind = MIXED_KINDS[0], MIXED_KINDS[-1]
    budgets = {float(BUDGETS["short"]) if not a.tiny else BUDGETS["short"] / 8: long_kind}
    budgets[float(BUDGETS["long"]) if not a.tiny else BUDGETS["long"] / 8] = short_kind  # the kind it does not fit
    every_arm = argparse.Namespace(**{**vars(a), "arms": ",".join(arm for arm, _ in ARMS)})
    needed = [(arm, coef) for arm, coef, _ in jobs(every_arm)]  # the criterion needs every arm, whatever --arms ran
    if any((arm, coef, short_kind) not in final for arm, coef in needed):
        return ["criterion: not all runs have finished"]
    out = []
    met_any = []
    for lenvm in LENVM_ARMS:
        lines, ok = [], True
        for kind in MIXED_KINDS:
            me = final[(lenvm, 1.0, kind)]
            for (arm, coef, k), s in final.items():
                if k != kind or arm in LENVM_ARMS:
                    continue
                acc_gap = max(me["accuracy_std"], s["accuracy_std"])
                tok_gap = max(me["mean_tokens_std"], s["mean_tokens_std"])
                if (s["accuracy"] > me["accuracy"] + acc_gap and s["mean_tokens"] <= me["mean_tokens"]) or (
                    s["mean_tokens"] < me["mean_tokens"] - tok_gap and s["accuracy"] >= me["accuracy"]
                ):
                    ok = False
                    lines.append(
                        f"  dominated on {kind} by {arm} ({coef:g}): {s['accuracy']:.3f} / {s['mean_tokens']:.1f}"
                    )
        for budget, kind in budgets.items():
            me, other = final[(lenvm, 1.0, kind)], final[("l1_max", budget, kind)]
            good = (me["accuracy"] >= other["accuracy"] + 0.05 and me["mean_tokens"] <= 1.2 * other["mean_tokens"]) or (
                me["mean_tokens"] <= 0.8 * other["mean_tokens"] and me["accuracy"] >= other["accuracy"] - 0.02
            )
            ok &= good
            lines.append(
                f"  vs l1_max ({budget:g}) on {kind}: {'MET' if good else 'NOT met'} ({me['accuracy']:.3f} / "
                f"{me['mean_tokens']:.1f} vs {other['accuracy']:.3f} / {other['mean_tokens']:.1f})"
            )
        steps = eval_steps(a)
        mine = first_step_at(rows, lenvm, 1.0, start["per_kind"]["all"], steps)
        for arm, coef in (("kimi", 1.0), ("shorter_better", 0.01)):
            theirs = first_step_at(rows, arm, coef, start["per_kind"]["all"], steps)
            good = mine is not None and (theirs is None or mine < theirs)
            ok &= good
            lines.append(
                f"  0.8x start tokens at no accuracy loss: step {mine} vs {arm} step {theirs}: {'MET' if good else 'NOT met'}"
            )
        out += [f"{lenvm}: {'MET' if ok else 'NOT met'}"] + lines
        met_any.append(ok)
    reached = {
        f"{arm} ({coef:g})": first_step_at(rows, arm, coef, start["per_kind"]["all"], eval_steps(a))
        for arm, coef in needed
    }
    out.append(  # the control for term 3: the task reward alone (no length term) on the same steps
        "Every arm, for reference (not a term): first step at 0.8x the starting tokens at no accuracy loss: "
        + ", ".join(f"{k} {v}" for k, v in reached.items())
    )
    return [f"SUCCESS CRITERION: {'MET' if any(met_any) else 'NOT MET'}"] + out


def report(a, start: dict) -> dict:
    from lenvm_rl.plots import plt, save_figure
    from lenvm_rl.rl.tasks import MIXED_KINDS

    out = Path(a.output_dir)
    rows = collect(a, start)
    final = table_at(rows, a.steps)
    lines = [f"Held-out evaluation after {a.steps} GRPO steps, per prompt kind (mean +- std over seeds).", ""]
    for kind in (*MIXED_KINDS, "all"):
        s0 = start["per_kind"][kind]
        lines += [
            f"**{kind}** (start: accuracy {s0['accuracy']:.3f}, {s0['mean_tokens']:.1f} tokens)",
            "",
            "| arm | coef | seeds | accuracy | mean tokens | tokens after answer | cut | EOS-only |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for (arm, coef, k), s in final.items():
            if k == kind:
                lines.append(
                    f"| {arm} | {coef:g} | {s['n_seeds']} | {s['accuracy']:.3f} +- {s['accuracy_std']:.3f} | "
                    f"{s['mean_tokens']:.1f} +- {s['mean_tokens_std']:.1f} | {s['tokens_after_answer']:.1f} | "
                    f"{s['truncated_share']:.1%} | {s['eos_only_share']:.1%} |"
                )
        lines.append("")
    result_verdict = verdict(rows, a, start)
    lines += result_verdict
    missing = [job_name(*j) for j in jobs(a) if not (out / "runs" / f"{job_name(*j)}.json").is_file()]
    if missing:
        lines += ["", f"Not run yet (not part of the criterion): {', '.join(missing)}."]
    arms = sorted({(r["arm"], r["coef"]) for r in rows})
    audit = audit_table(out, arms)
    lines += ["", *audit["lines"]]
    atomic_write(out / "summary.md", "\n".join(lines) + "\n")

    fig, axes = plt.subplots(2, len(MIXED_KINDS), figsize=(5 * len(MIXED_KINDS), 7), squeeze=False)
    for col, kind in enumerate(MIXED_KINDS):
        for arm, coef in arms:
            steps = sorted({r["step"] for r in rows if (r["arm"], r["coef"], r["kind"]) == (arm, coef, kind)})
            cells = [table_at(rows, st)[(arm, coef, kind)] for st in steps]
            for row, m in enumerate(("accuracy", "mean_tokens")):
                axes[row][col].errorbar(
                    steps,
                    [c[m] for c in cells],
                    yerr=[c[m + "_std"] for c in cells],
                    capsize=2,
                    marker="o",
                    label=f"{arm} ({coef:g})",
                )
        axes[0][col].set(title=f"{kind}: held-out accuracy", xlabel="GRPO step")
        axes[1][col].set(title=f"{kind}: mean tokens", xlabel="GRPO step")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, out / "curves.png")

    fig, axes = plt.subplots(1, len(MIXED_KINDS), figsize=(5 * len(MIXED_KINDS), 4.5), squeeze=False)
    for col, kind in enumerate(MIXED_KINDS):
        ax = axes[0][col]
        for (arm, coef, k), s in final.items():
            if k == kind:
                ax.errorbar(
                    s["mean_tokens"],
                    s["accuracy"],
                    xerr=s["mean_tokens_std"],
                    yerr=s["accuracy_std"],
                    fmt="o",
                    capsize=3,
                    label=f"{arm} ({coef:g}, {s['n_seeds']} seed{'s' * (s['n_seeds'] > 1)})",
                )
        s0 = start["per_kind"][kind]
        ax.plot(s0["mean_tokens"], s0["accuracy"], "k*", markersize=12, label="starting policy")
        ax.set(xlabel="mean tokens (held-out)", ylabel="strict accuracy (held-out)", title=f"{kind}, step {a.steps}")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, out / "pareto.png")

    for arm, coef in arms:  # completions to audit for checker holes
        path = out / "runs" / f"{job_name(arm, coef, 0)}.json"
        if path.is_file():
            final_eval = json.loads(path.read_text())["evals"][-1].get("completions", [])
            (out / f"audit_{arm}_c{coef:g}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in final_eval))
    results = {
        "command": "python -m evals.experiments.rl_mixed_lengths" + (" --tiny" if a.tiny else ""),
        "settings": {k: v for k, v in vars(a).items() if k not in ("worker",)},
        "budgets": BUDGETS,
        "refresh": REFRESH,
        "start": start,
        "runs": rows,
        "summary": [{"arm": k[0], "coef": k[1], "kind": k[2], **v} for k, v in final.items()],
        "verdict": result_verdict,
        "audit": audit["by_arm"],
    }
    atomic_write(out / "results.json", json.dumps(results, indent=1))
    return results


def audit_table(out: Path, arms: list) -> dict:
    """The audited step-40 completions of every seed, read by mixed_audit (a reading added after the runs)."""
    by_arm = {}
    lines = [
        "Audit (added after the runs, not part of the criterion): the stored step-40 completions of every seed; "
        "`count` answers correct under the pre-registered checker, and of those separated by commas as the prompt asks.",
        "",
        "| arm | coef | seeds | `one` correct | `count` correct | ... with commas | cut |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, coef in arms:
        paths = sorted((out / "runs").glob(f"{arm}_c{coef:g}_s*.json"))
        done = [c for p in paths for c in json.loads(p.read_text())["evals"][-1].get("completions", [])]
        s = by_arm[f"{arm}_c{coef:g}"] = {"seeds": len(paths), **audit_summary(done)}
        lines.append(
            f"| {arm} | {coef:g} | {s['seeds']} | {s['one_correct']} / {s['one']} | {s['count_correct']} / "
            f"{s['count']} | {s['count_correct_with_commas']} / {s['count']} | {s['cut']} |"
        )
    return {"by_arm": by_arm, "lines": lines}


# ----------------------------------------------------------------------------------------- timing
def time_step(a, policy: str, rows: dict) -> dict:
    """Time one GRPO step of the costliest arm (relative + refresh; a fresh-head LenVM stands in for the trained
    one) and one held-out evaluation on a slice, and extrapolate the full experiment's time on ``a.workers``."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lenvm_rl.modeling import LengthValueModel
    from lenvm_rl.returns import gamma_from_lengths

    scratch = Path(tempfile.mkdtemp(prefix="rl_mixed_timing_"))  # a full-size critic: never under results/
    critic_dir = scratch / "critic"
    model = LengthValueModel.from_backbone(policy)
    model.gamma = gamma_from_lengths([a.max_new_tokens])
    model.save_pretrained(critic_dir)
    AutoTokenizer.from_pretrained(policy).save_pretrained(critic_dir)
    timed = argparse.Namespace(**{**vars(a), "steps": 2, "output_dir": str(scratch)})
    trainer, _ = build_trainer("lenvm_refresh", 1.0, 0, timed, policy, str(critic_dir), rows)
    t0 = time.time()
    trainer.train()
    step_s = (time.time() - t0) / 2
    tok = AutoTokenizer.from_pretrained(policy)
    from lenvm_rl.rl.tasks import MIXED_KINDS

    policy_model, eval_s = AutoModelForCausalLM.from_pretrained(policy), 0.0
    for kind in MIXED_KINDS:  # kind by kind, as the evaluation batches them
        kind_rows = [r for r in rows["eval"] if r["kind"] == kind]
        t0 = time.time()
        evaluate_mixed(
            policy_model, tok, kind_rows[:4], a.eval_samples, a.temperature, a.max_new_tokens, engine=a.eval_engine
        )
        eval_s += (time.time() - t0) * len(kind_rows) / len(kind_rows[:4])
    n_runs = len(jobs(a))
    run_s = a.steps * step_s + len(eval_steps(a)) * eval_s
    total_s = n_runs * run_s / max(a.workers, 1) + eval_s

    def sig(x: float) -> float:  # three significant figures: a tiny model's sub-second step must not round to 0
        return float(f"{x:.3g}")

    estimate = {
        "step_seconds_lenvm_refresh": sig(step_s),
        "eval_seconds_full_heldout": sig(eval_s),
        "runs": n_runs,
        "run_seconds": sig(run_s),
        "workers": a.workers,
        "total_seconds_without_critic_training": sig(total_s),
        "total_hours_without_critic_training": sig(total_s / 3600),
        "note": "one worker, one thread, while the machine was shared; the critic's quickstart training comes on top",
    }
    (Path(a.output_dir) / "time_estimate.json").write_text(json.dumps(estimate, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(estimate, indent=1))
    return estimate


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--arms", default=",".join(sorted({arm for arm, _ in ARMS})))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=8, help="completions per step")
    p.add_argument("--num_generations", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, default=160)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--eval_samples", type=int, default=2)
    p.add_argument(
        "--eval_engine",
        choices=EVAL_ENGINES,
        default=None,
        help="held-out sampling: ctranslate2 (default where installed; 1.6x faster on the 2-core CPU) or hf",
    )
    p.add_argument("--repeats", type=int, default=2, help="passes over the training prompts in the dataset")
    p.add_argument("--audit", type=int, default=50, help="final completions kept per run for auditing")
    p.add_argument("--workers", type=int, default=2, help="single-thread worker processes (0: in this process)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--report_only", action="store_true", help="write the report from the finished runs and stop")
    p.add_argument("--time_step", action="store_true", help="time one step and one evaluation, print the estimate")
    p.add_argument("--tiny", action="store_true", help="a tiny random policy, 2 steps, in-process (CI)")
    p.add_argument(
        "--save_steps", type=int, default=5, help="checkpoint every N steps so a killed run resumes (0: off)"
    )
    p.add_argument("--output_dir", default="evals/results/rl_mixed_lengths")
    a = p.parse_args(argv)
    a.eval_engine = a.eval_engine or default_eval_engine()
    if a.tiny:
        a.steps, a.batch, a.max_new_tokens, a.eval_samples, a.audit, a.workers = 2, 4, 8, 1, 4, 0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rl.tasks import MIXED_KINDS, mixed_split

    unknown = set(a.arms.split(",")) - {arm for arm, _ in ARMS}
    if unknown:
        p.error(f"unknown arms {sorted(unknown)}; choose from {sorted({arm for arm, _ in ARMS})}")
    out = Path(a.output_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    policy = a.policy or resolve_model(None)
    rows = mixed_split()
    if a.tiny:  # two held-out and four training prompts per kind
        for split, n in (("eval", 2), ("train", 4)):
            rows[split] = [r for k in MIXED_KINDS for r in [r for r in rows[split] if r["kind"] == k][:n]]
    if a.time_step:
        return time_step(a, policy, rows)
    critic_path = str(out / "critic" / "model")
    start_file = out / "start.json"
    if a.report_only:
        return report(a, json.loads(start_file.read_text()))
    if a.worker:
        work(a, policy, critic_path, rows, json.loads(start_file.read_text()))
        return {}
    critic_path, critic_report = train_critic(out, policy, rows["train"], a)
    if not start_file.is_file():
        tok = AutoTokenizer.from_pretrained(policy)
        per_kind, _ = evaluate_mixed(
            AutoModelForCausalLM.from_pretrained(policy),
            tok,
            rows["eval"],
            a.eval_samples,
            a.temperature,
            a.max_new_tokens,
            engine=a.eval_engine,
        )
        start = {"per_kind": per_kind, "critic": critic_report, "eval_engine": a.eval_engine}
        start_file.write_text(json.dumps(start, indent=1))
    start = json.loads(start_file.read_text())
    if recorded_engine(start) != a.eval_engine:
        raise SystemExit(
            f"{start_file} was evaluated with {recorded_engine(start)!r}; rerun with --eval_engine "
            f"{recorded_engine(start)}, or delete it (and runs/) to start the experiment with {a.eval_engine}."
        )
    for stale in (out / "runs").glob("*.claim"):  # claims of a killed run: its jobs start again
        if not stale.with_suffix(".json").is_file():
            stale.unlink()
    if a.workers == 0:
        work(a, policy, critic_path, rows, start)
    else:
        flags = [f for f in (argv if argv is not None else sys.argv[1:]) if f != "--worker"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen([sys.executable, "-m", "evals.experiments.rl_mixed_lengths", *flags, "--worker"], env=env)
            for _ in range(a.workers)
        ]
        if any(proc.wait() for proc in procs):
            raise SystemExit("a worker failed; rerun to resume the unfinished runs")
    result = report(a, start)
    print((out / "summary.md").read_text())
    return result


if __name__ == "__main__":
    main()
