"""Leave one category out: how well does the quickstart's critic predict the length of answers to a kind of prompt
it never trained on?

The quickstart's held-out prompts are a random split within each category, so its critic has seen other prompts of
every held-out prompt's category. Here, for each category C of a finished quickstart run, a critic is trained with
the run's settings (and its gamma) on the run's training rollouts of every *other* category, and judged on C's
held-out prompts with the run's own held-out samples and ground truth. Beside it, on the same prompts: the run's
critic (random split) and the fold's train-mean constant (return-consistent). Pooled over the categories, every
held-out prompt is predicted once by a critic that never saw its category: the leave-one-category-out MRE, paired
with the random split's MRE on the same prompts.

Each fold's critic goes to ``--folds_dir/<category>`` and is reused by a rerun with the same settings, so a run can
be split across processes (``--categories``, each with its own ``--output_dir``) and joined by a last run over all of
them; the json (of the folds given) is rewritten after every fold. A run that chose its epoch on a validation split
is refused (its training rollouts hold the validation prompts).

    python -m evals.experiments.leave_one_category_out --run_dir lenvm_runs/quickstart \
        --folds_dir lenvm_runs/loco --output_dir evals/results/leave_one_category_out
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

NAME = "leave_one_category_out"
ARMS = ("random split", "left out", "constant")


def fold_config(run_dir: Path, category: str, folds_dir: Path, categories: list[str]):
    """The run's quickstart settings, with ``category`` left out of training and the run's gamma kept (the ground
    truth depends on it)."""
    from lenvm_rl.quickstart import QuickstartConfig

    m = json.loads((run_dir / "metrics.json").read_text())
    base = QuickstartConfig.from_report(m)
    rest = ",".join(c for c in categories if c != category)
    return replace(base, output_dir=str(folds_dir / category), categories=rest, gamma=str(m["gamma"])), m["gamma"]


def predictions(critic_dir: Path, prompts: dict[str, str], gamma: float) -> dict[str, float]:
    from lenvm_rl.critic import LengthCritic

    critic = LengthCritic.from_pretrained(critic_dir)
    if abs(critic.gamma - gamma) > 1e-9:
        raise SystemExit(f"{critic_dir} has gamma {critic.gamma}, the ground truth uses {gamma}")
    ids = sorted(prompts)
    return dict(zip(ids, critic.predict_length([prompts[i] for i in ids]).tolist()))


def run_fold(run_dir: Path, category: str, folds_dir: Path, categories: list[str], train: list, heldout: list) -> dict:
    """Per-prompt truth and the three arms' predictions on ``category``'s held-out prompts."""
    from lenvm_rl.metrics import answer_tokens, finished_lengths_by_prompt, per_prompt_truth, train_mean_baselines
    from lenvm_rl.quickstart import finished_report, train_and_report

    cfg, gamma = fold_config(run_dir, category, folds_dir, categories)
    if cfg.validation_prompts_per_category:  # its training rollouts hold the validation prompts too
        raise SystemExit(f"{run_dir} chose its epoch on a validation split; use a run without one")
    fold_train = [r for r in train if r["category"] != category]
    fold_held = [r for r in heldout if r["category"] == category]
    if not fold_train or not fold_held:
        raise SystemExit(f"fold {category!r}: no training rollouts of other categories or no held-out ones of it")
    report = finished_report(cfg) or train_and_report(cfg, fold_train, fold_held)
    if abs(report["gamma"] - gamma) > 1e-9:
        raise SystemExit(f"fold {category} trained with gamma {report['gamma']}, the run with {gamma}")
    truth = per_prompt_truth(finished_lengths_by_prompt(fold_held), gamma)
    prompts = {r["prompt_id"]: r["prompt"] for r in fold_held if r["prompt_id"] in truth}
    finished = [answer_tokens(r) for r in fold_train if r["finish_reason"] == "stop"]
    const = train_mean_baselines(finished, gamma)["train mean (return-consistent)"]
    return {
        "truth": truth,
        "random split": predictions(run_dir / "model", prompts, gamma),
        "left out": predictions(Path(cfg.output_dir) / "model", prompts, gamma),
        "constant": {i: const for i in truth},
        "train_rollouts": len(fold_train),
        "training_seconds": report["seconds"]["training"],
    }


def summarize(folds: dict[str, dict]) -> dict:
    """Errors per category and pooled over every finished fold, per arm (the same prompts and truth for all)."""
    from lenvm_rl.metrics import prediction_errors

    def errors(keep: list[str]) -> dict:
        truth = {f"{c}/{i}": folds[c]["truth"][i] for c in keep for i in folds[c]["truth"]}
        return {
            arm: prediction_errors({f"{c}/{i}": folds[c][arm][i] for c in keep for i in folds[c]["truth"]}, truth)
            for arm in ARMS
        }

    return {"per_category": {c: errors([c]) for c in folds}, "pooled": errors(list(folds)) if folds else {}}


def markdown(summary: dict, run_dir: str) -> str:
    lines = [
        f"### Leave one category out ({run_dir})",
        "",
        "MRE / MAE (tokens) on each category's held-out prompts; `left out`: a critic trained without the category.",
        "",
        "| category | prompts | random split | left out | constant |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = list(summary["per_category"].items()) + ([("**pooled**", summary["pooled"])] if summary["pooled"] else [])
    for cat, e in rows:
        cells = [f"{100 * e[a]['mre']:.1f} % / {e[a]['mae']:.1f}" for a in ARMS]
        lines.append(f"| {cat} | {e[ARMS[0]]['prompts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir", default="lenvm_runs/quickstart", help="a finished `lenvm quickstart` output folder")
    p.add_argument("--folds_dir", default="lenvm_runs/leave_one_category_out", help="one critic per category here")
    p.add_argument("--categories", default="", help="the folds to run, comma-separated (default: every category)")
    p.add_argument("--output_dir", default=f"lenvm_runs/eval/{NAME}")
    a = p.parse_args(argv)
    from lenvm_rl.data import load_rollouts
    from lenvm_rl.evaluation.common import write_outputs

    run_dir = Path(a.run_dir)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "model").is_dir():
        raise SystemExit(f"{run_dir} is not a finished quickstart run (metrics.json and model/): run lenvm quickstart")
    train = load_rollouts(run_dir / "rollouts_train.jsonl")
    heldout = load_rollouts(run_dir / "rollouts_heldout.jsonl")
    categories = sorted({r["category"] for r in train})
    chosen = [c.strip() for c in a.categories.split(",") if c.strip()] or categories
    if unknown := [c for c in chosen if c not in categories]:
        raise SystemExit(f"unknown categories {unknown}; the run has {categories}")
    command = " ".join([f"python -m evals.experiments.{NAME}", *(sys.argv[1:] if argv is None else argv)])
    folds: dict[str, dict] = {}
    result: dict = {}
    for c in chosen:
        folds[c] = run_fold(run_dir, c, Path(a.folds_dir), categories, train, heldout)
        summary = summarize(folds)
        result = {"command": command, "run_dir": str(run_dir), "categories": list(folds), **summary, "folds": folds}
        write_outputs(a.output_dir, NAME, result, markdown(summary, str(run_dir)))  # partial results survive
    return result


if __name__ == "__main__":
    main()
