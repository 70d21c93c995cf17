"""Experiment: does a LenVM length term in GRPO cut tokens without costing accuracy, against honest baselines?

Task "opposites" ("What is the opposite of 'hot'?", strict first-stated-answer check): the 135M default is
mostly right but verbose, and on it shorter is not more often right, so a length method has to earn its
tokens. Policy: the embedded SmolLM2-135M-Instruct. Arms (each = the task reward plus a length term):

    task            the task reward alone
    soft_overlong   + DAPO soft overlong punishment (coef = its max length; the cache is 32 tokens)
    kimi            + Kimi k1.5 length reward with its correctness gate, over whole groups (coef = weight)
    l1_max          + L1-Max fixed-budget reward c * clip(0.5 + (n - L) / 2n, 0, 1) (coef = budget n)
    lenvm_seq       + c * beta * critic_length_return: the same LenVM at the sequence level (coef = beta)
    lenvm_relative  LengthShapedGRPOTrainer, length_shaping="relative" (coef = alpha; kappa 0.5, lambda 0.8)

The LenVM is trained first (the quickstart pipeline) on the starting policy's own answers to the RL words,
never the 48 held-out evaluation words. Every run is evaluated on the held-out words (48 x 4 samples, fixed
seed, T 0.7, the same cap) at its start, middle and end. The main arms run 3 seeds with paired prompt order.
Two single-thread worker processes share the 2 cores; each run writes its own file as it ends, and a rerun
resumes. Outputs: results.json (``runs``), summary.md (mean +- std over seeds, the fixed success criterion),
pareto.png, audit_<arm>.jsonl (50 final completions of each arm's reported coefficient at seed 0).

    python -m evals.experiments.rl_length_shaping           # about 90 minutes on the 2-core CPU
    python -m evals.experiments.rl_length_shaping --tiny    # CI-sized: a tiny random policy, 2 steps, in-process
    python -m evals.experiments.rl_length_shaping --report_only   # the report of the runs finished so far
    python -m evals.experiments.rl_length_shaping --arms lenvm_seq --fp32   # one arm's unfinished runs, in fp32
    python -m evals.experiments.rl_length_shaping --critic DIR --jobs lenvm_relative_c1_s0 --output_dir OUT
        # chosen runs with an already trained critic (a quickstart output dir): nothing is trained or overwritten

The critic's weights are not committed (its rollouts are): a rerun trains it again from them into critic/ (over
the recorded critic's committed report) before any run, and the trainer has changed since the recorded runs, so
runs added later use a retrained critic (the recorded one's held-out MRE was 29.2 %). ``--critic DIR`` uses an
already trained one instead and writes nothing to critic/ (how rl_length_shaping_one_critic/ was made).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# (arm, coef, seeds): the core arms run 3 seeds, the sweep points one.
# Order = priority: every arm at seed 0 first, then the other seeds, then the rest of the sweep.
CORE = (("task", 0.0), ("kimi", 1.0), ("l1_max", 16.0), ("lenvm_relative", 1.0))
# The coefficient each arm is reported at (its row in the results and its audit file); the rest are sweep points.
REPORTED = {**dict(CORE), "lenvm_seq": 1.0, "soft_overlong": 48.0}
JOBS = [(arm, coef, 0) for arm, coef in CORE] + [("lenvm_seq", 1.0, 0), ("soft_overlong", 48.0, 0)]
JOBS += [(arm, coef, seed) for seed in (1, 2) for arm, coef in CORE]
JOBS += [("lenvm_seq", 2.0, 0), ("kimi", 0.5, 0), ("l1_max", 32.0, 0), ("lenvm_relative", 0.5, 0)]
# The sequence-level control at its reported coefficient on the other two seeds (paired with `relative`).
JOBS += [("lenvm_seq", 1.0, 1), ("lenvm_seq", 1.0, 2)]
ARMS = ("task", "soft_overlong", "kimi", "l1_max", "lenvm_seq", "lenvm_relative")


def job_name(arm, coef, seed) -> str:
    return f"{arm}_c{coef:g}_s{seed}"


# ----------------------------------------------------------------------------------------- evaluation
def evaluate_policy(model, tokenizer, words, a, seed: int = 1234) -> tuple[dict, list[dict]]:
    """Strict accuracy and length figures of ``model`` on ``words`` x ``a.eval_samples`` (RNG state untouched)."""
    import torch

    from lenvm_rl.rl.tasks import OPPOSITES, answer_sentence_end, first_stated_answer, opposites_prompt

    was_training = model.training
    model.eval()
    rows = []
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(words), a.eval_batch):
            chunk = words[start : start + a.eval_batch]
            texts = [
                tokenizer.apply_chat_template(opposites_prompt(w), tokenize=False, add_generation_prompt=True)
                for w in chunk
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            out = model.generate(
                **enc.to(model.device),
                do_sample=True,
                temperature=a.temperature,
                # transformers' hidden default, stated: the committed results were evaluated with it, while TRL
                # samples the full vocabulary in training (top_k 0); the mixed-task experiment evaluates with 0
                top_k=50,
                top_p=1.0,
                max_new_tokens=a.max_new_tokens,
                num_return_sequences=a.eval_samples,
                pad_token_id=tokenizer.pad_token_id,
            )
            for k, ids in enumerate(out[:, enc["input_ids"].shape[1] :].tolist()):
                word = chunk[k // a.eval_samples]
                ended = tokenizer.eos_token_id in ids
                ids = ids[: ids.index(tokenizer.eos_token_id)] if ended else ids
                text = tokenizer.decode(ids, skip_special_tokens=True)
                stated, _ = first_stated_answer(text, word)
                head = len(tokenizer(text[: answer_sentence_end(text, word)], add_special_tokens=False)["input_ids"])
                rows.append(
                    {
                        "word": word,
                        "text": text,
                        "correct": stated in OPPOSITES[word].split(),
                        "tokens": len(ids) + 1 if ended else a.max_new_tokens,
                        "truncated": not ended,
                        "after_answer": max(0, len(ids) - head),
                        "eos_only": ended and len(ids) == 0,
                    }
                )
    model.train(was_training)
    n = len(rows)
    metrics = {
        "accuracy": sum(r["correct"] for r in rows) / n,
        "mean_tokens": sum(r["tokens"] for r in rows) / n,
        "tokens_after_answer": sum(r["after_answer"] for r in rows) / n,
        "eos_only_share": sum(r["eos_only"] for r in rows) / n,
        "truncated_share": sum(r["truncated"] for r in rows) / n,
        "n": n,
    }
    return metrics, rows


# ----------------------------------------------------------------------------------------- one run
def run_job(arm: str, coef: float, seed: int, a, policy: str, critic_path: str, words: dict) -> dict:
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
    from lenvm_rl.rl.rewards import (
        get_kimi_length_reward,
        get_l1_max_length_reward,
        get_lenvm_seq_reward,
        get_soft_overlong_reward,
    )
    from lenvm_rl.rl.tasks import opposites_dataset, opposites_reward

    tokenizer = AutoTokenizer.from_pretrained(policy)
    evals, train_log = [], []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in (a.steps // 2, a.steps):
                metrics, rows = evaluate_policy(model, tokenizer, words["eval"], a)
                evals.append({"step": state.global_step, **metrics})
                if state.global_step == a.steps:
                    evals[-1]["completions"] = rows[: a.audit]

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "rewards/opposites_reward/mean" in logs:
                train_log.append(
                    {
                        "step": state.global_step,
                        "accuracy": logs["rewards/opposites_reward/mean"],
                        "mean_tokens": logs["completions/mean_length"],
                        "predicted": logs.get("length/predicted_remaining_at_prompt"),
                    }
                )

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
        bf16=use_bf16(a),
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=seed,
        disable_tqdm=True,
    )
    rewards = [opposites_reward]
    if arm == "soft_overlong":
        rewards.append(get_soft_overlong_reward(int(coef), 32 if not a.tiny else 4))
    elif arm == "kimi":
        rewards.append(get_kimi_length_reward(opposites_reward))
    elif arm == "l1_max":
        rewards.append(get_l1_max_length_reward(opposites_reward, budget=int(coef)))
    elif arm == "lenvm_seq":
        rewards.append(
            get_lenvm_seq_reward(
                opposites_reward, beta=coef, critic=LengthCritic.from_pretrained(critic_path, device="cpu")
            )
        )
    weights = [1.0, coef] if arm == "kimi" else None
    kwargs = dict(
        model=policy,
        reward_funcs=rewards,
        callbacks=[Probe()],
        processing_class=tokenizer,
        train_dataset=opposites_dataset(words["train"], repeats=a.repeats, seed=seed),
    )
    if arm == "lenvm_relative":
        args = LengthShapedGRPOConfig(
            **common,
            critic_model_path=critic_path,
            length_shaping="relative",
            length_coef=coef,
            length_gate_reward="opposites_reward",
        )
        trainer = LengthShapedGRPOTrainer(args=args, **kwargs)
    else:
        trainer = GRPOTrainer(args=GRPOConfig(**common, reward_weights=weights), **kwargs)
    trainer.train()
    return {"arm": arm, "coef": coef, "seed": seed, "evals": evals, "train_log": train_log}


# ----------------------------------------------------------------------------------------- setup
def use_bf16(a) -> bool:
    """bf16 autocast where the machine computes it natively, unless ``--fp32`` (the recorded runs were fp32: a run
    added to them on a bf16 machine needs it to stay paired) or ``--tiny``."""
    from lenvm_rl.defaults import native_bf16

    return native_bf16() and not (a.tiny or a.fp32)


def train_critic(out: Path, policy: str, words: list[str], a) -> tuple[str, dict]:
    from lenvm_rl.quickstart import QuickstartConfig, run_quickstart
    from lenvm_rl.rl.tasks import opposites_prompt

    prompts = out / "critic_prompts.jsonl"
    with open(prompts, "w") as f:
        for w in words:
            f.write(json.dumps({"prompt_id": f"opp-{w}", "prompt": opposites_prompt(w)[0]["content"]}) + "\n")
    cfg = QuickstartConfig(
        output_dir=str(out / "critic"),
        model=policy,
        prompts=str(prompts),
        categories="",
        eval_prompts_per_category=4 if a.tiny else 10,
        train_samples=2 if a.tiny else 4,
        eval_samples=4 if a.tiny else 8,
        max_new_tokens=24 if a.tiny else a.max_new_tokens,
        temperature=a.temperature,
        top_p=1.0,
        num_train_epochs=1 if a.tiny else 3,
        max_length=256,
        bf16=use_bf16(a),
        truncated="drop",
    )  # as in the recorded run (before censored targets existed)
    report = run_quickstart(cfg)
    return str(out / "critic" / "model"), report["length_prediction"]


def claim(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def work(a, policy: str, critic_path: str, words: dict) -> None:
    """Run every unclaimed job of the queue; each writes ``runs/<job>.json`` when it ends."""
    import torch

    torch.set_num_threads(1 if not a.tiny else torch.get_num_threads())
    runs = Path(a.output_dir) / "runs"
    for arm, coef, seed in jobs(a):
        name = job_name(arm, coef, seed)
        if (runs / f"{name}.json").is_file() or not claim(runs / f"{name}.claim"):
            continue
        print(f"[rl_length_shaping] worker {os.getpid()}: {name}", flush=True)
        result = run_job(arm, coef, seed, a, policy, critic_path, words)
        (runs / f"{name}.json").write_text(json.dumps(result, indent=1))


def jobs(a):
    if a.tiny:
        return [(arm, {"soft_overlong": 6.0, "l1_max": 4.0}.get(arm, 1.0), 0) for arm in ARMS]
    chosen = set(a.jobs.split(",")) if a.jobs else None
    return [j for j in JOBS if j[0] in a.arms.split(",") and (chosen is None or job_name(*j) in chosen)]


def given_critic(critic_dir: str) -> tuple[str, dict]:
    """The model path and length report of a trained quickstart output dir passed as ``--critic``."""
    d = Path(critic_dir)
    if not (d / "model").is_dir() or not (d / "metrics.json").is_file():
        raise SystemExit(
            f"--critic {critic_dir}: expected a quickstart output dir with model/ and metrics.json "
            "(lenvm quickstart --output_dir DIR writes one)"
        )
    return str(d / "model"), json.loads((d / "metrics.json").read_text())["length_prediction"]


# ----------------------------------------------------------------------------------------- report
def collect(a, start: dict) -> list[dict]:
    """One row per (run, evaluation step); step 0 is the shared starting policy."""
    rows = []
    for path in sorted((Path(a.output_dir) / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        for ev in [{"step": 0, **start}] + run["evals"]:
            rows.append(
                {
                    "arm": run["arm"],
                    "coef": run["coef"],
                    "seed": run["seed"],
                    **{k: v for k, v in ev.items() if k != "completions"},
                }
            )
    return rows


def last_step_table(rows: list[dict], steps: int) -> dict:
    """(arm, coef) -> mean and std over seeds of every metric at the last step."""
    cells: dict = {}
    for r in rows:
        if r["step"] == steps:
            cells.setdefault((r["arm"], r["coef"]), []).append(r)
    table = {}
    for key, rs in sorted(cells.items()):
        stats = {"n_seeds": len(rs)}
        for m in ("accuracy", "mean_tokens", "tokens_after_answer", "eos_only_share", "truncated_share"):
            xs = [r[m] for r in rs]
            stats[m] = statistics.mean(xs)
            stats[m + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        table[key] = stats
    return table


def per_seed_lines(rows: list[dict], steps: int) -> list[str]:
    """The core arms and `lenvm_seq` seed by seed (the prompt order is paired per seed): accuracy / mean tokens at the last step."""
    last = {(r["arm"], r["coef"], r["seed"]): r for r in rows if r["step"] == steps}
    seeds = sorted({seed for _, _, seed in last})
    columns = (*CORE, ("lenvm_seq", REPORTED["lenvm_seq"]))  # the control `relative` is paired with
    lines = [
        "Seed by seed (accuracy / mean tokens):",
        "",
        "| seed | " + " | ".join(f"{arm} ({coef:g})" for arm, coef in columns) + " |",
        "|---:|" + "---:|" * len(columns),
    ]
    for seed in seeds:
        cells = [last.get((arm, coef, seed)) for arm, coef in columns]
        lines.append(
            f"| {seed} | "
            + " | ".join("-" if c is None else f"{c['accuracy']:.3f} / {c['mean_tokens']:.1f}" for c in cells)
            + " |"
        )
    return lines


def verdict(table: dict) -> list[str]:
    """The success criterion fixed before running (the issue's), checked on the 3-seed means."""
    main = {arm: table.get((arm, coef)) for arm, coef in CORE}
    rel = main.get("lenvm_relative")
    if not rel or any(v is None for v in main.values()):
        return ["criterion: not all core arms have finished"]
    out = []

    def beats(other, label):
        ok_short = rel["mean_tokens"] <= 0.8 * other["mean_tokens"] and rel["accuracy"] >= other["accuracy"] - 0.02
        ok_acc = rel["accuracy"] >= other["accuracy"] + 0.05 and rel["mean_tokens"] <= 1.2 * other["mean_tokens"]
        out.append(
            f"vs {label}: {'MET' if ok_short or ok_acc else 'NOT met'} (relative {rel['accuracy']:.3f} acc / "
            f"{rel['mean_tokens']:.1f} tok; {label} {other['accuracy']:.3f} / {other['mean_tokens']:.1f})"
        )
        return ok_short or ok_acc

    ok = rel["accuracy"] >= main["task"]["accuracy"] - 0.05
    out.append(
        f"accuracy >= task - 0.05: {'MET' if ok else 'NOT met'} ({rel['accuracy']:.3f} vs "
        f"{main['task']['accuracy']:.3f})"
    )
    ok &= beats(main["kimi"], "kimi") & beats(main["l1_max"], "l1_max")
    for (arm, coef), s in table.items():  # no baseline point dominates by more than one std
        if arm in ("lenvm_relative",):
            continue
        if (
            s["accuracy"] > rel["accuracy"] + max(rel["accuracy_std"], s["accuracy_std"])
            and s["mean_tokens"] <= rel["mean_tokens"]
        ) or (
            s["mean_tokens"] < rel["mean_tokens"] - max(rel["mean_tokens_std"], s["mean_tokens_std"])
            and s["accuracy"] >= rel["accuracy"]
        ):
            ok = False
            out.append(f"dominated by {arm} (coef {coef:g}): {s['accuracy']:.3f} acc / {s['mean_tokens']:.1f} tok")
    seq = [s for (arm, _), s in table.items() if arm == "lenvm_seq"]
    if seq:
        best = max(seq, key=lambda s: s["accuracy"] - s["mean_tokens"] / 100)
        ok &= beats(best, "lenvm_seq (best coef)")
    collapse = rel["eos_only_share"] < 0.05
    out.append(f"collapse guard (EOS-only < 5 %): {'MET' if collapse else 'NOT met'} ({rel['eos_only_share']:.1%})")
    out.insert(0, f"SUCCESS CRITERION: {'MET' if ok and collapse else 'NOT MET'}")
    return out


def reported_coefs(a) -> dict:
    """arm -> the coefficient its results row reports (the tiny run has one coefficient per arm)."""
    return {arm: coef for arm, coef, _ in jobs(a)} if a.tiny else dict(REPORTED)


def write_audits(out: Path, coefs: dict, seed: int = 0) -> list[Path]:
    """``audit_<arm>.jsonl``: the final completions of the run each arm is reported at (its coefficient, ``seed``).

    Picked by name, not by sorting: ``kimi_c0.5_s0`` sorts before ``kimi_c1_s0``, and the sweep point is not the
    row the results report."""
    written = []
    for arm, coef in coefs.items():
        path = out / "runs" / f"{job_name(arm, coef, seed)}.json"
        if not path.is_file():
            continue  # not run yet: no audit rather than another setting's
        final = json.loads(path.read_text())["evals"][-1].get("completions", [])
        (out / f"audit_{arm}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in final))
        written.append(out / f"audit_{arm}.jsonl")
    return written


def report(a, start: dict) -> dict:
    from lenvm_rl.plots import plt, save_figure

    out = Path(a.output_dir)
    start = dict(start)
    critic = start.pop("critic", None)
    rows = collect(a, start)
    table = last_step_table(rows, a.steps)
    lines = [
        f"Held-out evaluation after {a.steps} GRPO steps ({start['n']} completions per evaluation; start: "
        f"accuracy {start['accuracy']:.3f}, {start['mean_tokens']:.1f} tokens).",
        "",
        "| arm | coef | seeds | accuracy | mean tokens | tokens after answer | EOS-only | truncated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (arm, coef), s in table.items():
        lines.append(
            f"| {arm} | {coef:g} | {s['n_seeds']} | {s['accuracy']:.3f} +- {s['accuracy_std']:.3f} | "
            f"{s['mean_tokens']:.1f} +- {s['mean_tokens_std']:.1f} | {s['tokens_after_answer']:.1f} | "
            f"{s['eos_only_share']:.1%} | {s['truncated_share']:.1%} |"
        )
    lines += [""] + per_seed_lines(rows, a.steps) + [""] + verdict(table)
    missing = [job_name(*j) for j in jobs(a) if (j[0], j[1]) not in table or table[j[0], j[1]]["n_seeds"] <= j[2]]
    if missing:
        lines += ["", f"Not run (so not part of the criterion): {', '.join(missing)}."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(7, 5))
    for (arm, coef), s in table.items():
        ax.errorbar(
            s["mean_tokens"],
            s["accuracy"],
            xerr=s["mean_tokens_std"],
            yerr=s["accuracy_std"],
            fmt="o",
            capsize=3,
            label=f"{arm} ({coef:g}, {s['n_seeds']} seed{'s' * (s['n_seeds'] > 1)})",
        )
    ax.plot(start["mean_tokens"], start["accuracy"], "k*", markersize=12, label="starting policy")
    ax.set(
        xlabel="mean tokens (held-out, truncated at the cap)",
        ylabel="strict accuracy (held-out)",
        title=f"opposites, GRPO {a.steps} steps: accuracy vs tokens (mean +- std over seeds)",
    )
    ax.legend(fontsize=7)
    save_figure(fig, out / "pareto.png")

    write_audits(out, reported_coefs(a))
    results = {
        "command": "python -m evals.experiments.rl_length_shaping" + (" --tiny" if a.tiny else ""),
        "settings": {k: v for k, v in vars(a).items() if k not in ("worker",)},
        "start": start,
        "critic": critic,
        "runs": rows,
        "summary": [{"arm": k[0], "coef": k[1], **v} for k, v in table.items()],
        "verdict": verdict(table),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="completions per step")
    p.add_argument("--num_generations", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--eval_samples", type=int, default=4)
    p.add_argument("--eval_batch", type=int, default=12, help="held-out words per generate call")
    p.add_argument("--repeats", type=int, default=1, help="passes over the RL words in the dataset")
    p.add_argument("--audit", type=int, default=50, help="final completions kept per run for auditing")
    p.add_argument("--workers", type=int, default=2, help="single-thread worker processes (0: in this process)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--report_only", action="store_true", help="write the report from the finished runs and stop")
    p.add_argument("--fp32", action="store_true", help="fp32 even where bf16 is native (as the recorded runs)")
    p.add_argument("--tiny", action="store_true", help="a tiny random policy, 2 steps, in-process (CI)")
    p.add_argument("--output_dir", default="evals/results/rl_length_shaping")
    p.add_argument("--critic", default=None, help="a trained quickstart output dir to use instead of training one")
    p.add_argument("--jobs", default=None, help="comma-separated run names (e.g. lenvm_seq_c1_s0): only these")
    a = p.parse_args(argv)
    if a.jobs:
        unknown = set(a.jobs.split(",")) - {job_name(*j) for j in JOBS}
        if unknown:
            raise SystemExit(f"--jobs: unknown run names {sorted(unknown)}; known: {[job_name(*j) for j in JOBS]}")
    if a.tiny:
        a.steps, a.batch, a.max_new_tokens, a.eval_samples, a.audit, a.workers = 2, 4, 8, 2, 4, 0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rl.tasks import opposites_split

    out = Path(a.output_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    policy = a.policy or resolve_model(None)
    train_words, eval_words = opposites_split()
    words = {"train": train_words, "eval": eval_words[:6] if a.tiny else eval_words}
    # --critic: a trained critic, read (and checked) once; otherwise the one trained into critic/ below.
    critic_path, critic_report = given_critic(a.critic) if a.critic else (str(out / "critic" / "model"), None)
    if a.report_only:
        return report(a, json.loads((out / "start.json").read_text()))
    if a.worker:
        work(a, policy, critic_path, words)
        return {}
    if not a.critic:
        critic_path, critic_report = train_critic(out, policy, train_words, a)
    start_file = out / "start.json"
    if not start_file.is_file():
        tok = AutoTokenizer.from_pretrained(policy)
        metrics, _ = evaluate_policy(AutoModelForCausalLM.from_pretrained(policy), tok, words["eval"], a)
        start_file.write_text(json.dumps({**metrics, "critic": critic_report}, indent=1))
    start = json.loads(start_file.read_text())
    for stale in (out / "runs").glob("*.claim"):  # claims of a killed run: its jobs start again
        if not stale.with_suffix(".json").is_file():
            stale.unlink()
    if a.workers == 0:
        work(a, policy, critic_path, words)
    else:
        flags = [f for f in (argv if argv is not None else sys.argv[1:]) if f != "--worker"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen([sys.executable, "-m", "evals.experiments.rl_length_shaping", *flags, "--worker"], env=env)
            for _ in range(a.workers)
        ]
        if any(proc.wait() for proc in procs):
            raise SystemExit("a worker failed; rerun to resume the unfinished runs")
    return report(a, start)


if __name__ == "__main__":
    main()
