"""Quickstart critics over seeds: one answer per prompt (the arm named ``default``: the quickstart's default when the
committed runs were made; two since 2026-12-01) against ``--freeze_layers 20 --train_samples 2``, paired by seed.

For each seed the one-answer quickstart runs first; the other arm starts from a copy of its rollouts, so it trains
on the same 252 completions plus one more sample per prompt and is judged on the same held-out split and
samples: the two differ only in what they train on and how. The seed sets the held-out split, the sampling and
the training. Each row is the quickstart's own held-out table (4 samples per held-out prompt; its noise floor
beside it). A run already in ``--runs_dir`` with the same settings is reused, so the script resumes.
``--categories`` defaults to the quickstart's own; the committed results used the earlier seven-category default:

    python -m evals.experiments.quickstart_seeds --seeds 0,1,2 --runs_dir lenvm_runs/seeds \
        --categories one_word,yes_no,short_fact,list,explain,steps,story --output_dir evals/results/quickstart_seeds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

# "default": the quickstart's default when these runs were made (one answer per prompt; two since 2026-12-01)
ARMS = {"default": {"train_samples": 1}, "freeze20_x2": {"freeze_layers": 20, "train_samples": 2}}
ROLLOUTS = ("rollouts_train.jsonl", "rollouts_heldout.jsonl")
COLUMNS = {  # name in the table: how to read it from a run's metrics.json
    "MRE": lambda m: m["length_prediction"]["LenVM"]["mre"],
    "MAE": lambda m: m["length_prediction"]["LenVM"]["mae"],
    "Kendall tau": lambda m: m["length_prediction"]["LenVM"]["kendall_tau"],
    "MRE, longest quartile": lambda m: m["length_prediction"]["LenVM"]["mre_longest_quartile"],
    "value MSE": lambda m: m["online_eval"]["eval_value_mse"],
    "train-mean MRE": lambda m: _train_mean(m)["mre"],  # the control: one constant, no critic
    "held-out cut": lambda m: m["heldout_cut"],  # cut at the cap: not in the ground truth
    "noise floor": lambda m: m.get("truth_noise_floor_mre"),  # None in runs older than the figure
}
PERCENT = {"MRE", "MRE, longest quartile", "train-mean MRE", "held-out cut", "noise floor"}
EXTRA = ("train-mean MRE", "held-out cut", "noise floor")  # context columns: no paired difference


def _train_mean(m: dict) -> dict:
    """The return-consistent train-mean baseline of a run (its name carries the constant)."""
    (row,) = (v for k, v in m["length_prediction"].items() if k.startswith("baseline: train mean (return-consistent)"))
    return row


def stat(f, values: list) -> float | None:
    """``f`` over the values a run has (an older run lacks the noise floor); None with fewer than two."""
    values = [v for v in values if v is not None]
    return float(f(values)) if len(values) >= 2 else None


def run_one(arm: str, seed: int, runs_dir: Path, backend: str, categories: str) -> dict:
    """The run's metrics.json (computed unless a run with these settings is there), with ``heldout_cut``: the
    share of its held-out completions cut at the cap."""
    out = runs_dir / f"{arm}_s{seed}"
    m = _metrics(arm, seed, out, runs_dir, backend, categories)
    from lenvm_rl.data import load_rollouts

    heldout = load_rollouts(out / "rollouts_heldout.jsonl")
    return m | {"heldout_cut": sum(r["finish_reason"] != "stop" for r in heldout) / len(heldout)}


def _metrics(arm: str, seed: int, out: Path, runs_dir: Path, backend: str, categories: str) -> dict:
    from lenvm_rl.quickstart import QuickstartConfig, finished_report, run_quickstart

    cfg = replace(
        QuickstartConfig(), output_dir=str(out), seed=seed, backend=backend, categories=categories, **ARMS[arm]
    )
    if done := finished_report(cfg):
        return done
    if arm != "default":  # the paired default's rollouts: the same held-out samples, a superset of its training data
        base = runs_dir / f"default_s{seed}"
        out.mkdir(parents=True, exist_ok=True)
        for name in ROLLOUTS:
            if not (out / name).exists():
                shutil.copy(base / name, out / name)
    run_quickstart(cfg)
    return json.loads((out / "metrics.json").read_text())


def fmt(name: str, x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f} %" if name in PERCENT else f"{x:.3f}" if name == "value MSE" else f"{x:.2f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--runs_dir", default="lenvm_runs/seeds")
    p.add_argument("--backend", default="hf_continuous", help="rollout sampler (the same distribution either way)")
    p.add_argument("--categories", default=None, help="built-in prompt categories; default: the quickstart's")
    p.add_argument("--output_dir", default="evals/results/quickstart_seeds")
    a = p.parse_args(argv)
    from lenvm_rl.evaluation.common import write_outputs
    from lenvm_rl.quickstart import QuickstartConfig

    categories = QuickstartConfig().categories if a.categories is None else a.categories
    seeds = [int(s) for s in a.seeds.split(",")]
    arms = [arm for arm in ARMS if arm in a.arms.split(",")]  # the default first: the others copy its rollouts
    if unknown := set(a.arms.split(",")) - set(ARMS):
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}; use {', '.join(ARMS)}")
    if len(seeds) < 2:
        raise SystemExit("a spread needs at least two seeds")

    runs = {(arm, s): run_one(arm, s, Path(a.runs_dir), a.backend, categories) for s in seeds for arm in arms}
    table = {arm: {name: [get(runs[arm, s]) for s in seeds] for name, get in COLUMNS.items()} for arm in arms}
    result = {
        "seeds": seeds,
        "categories": categories,
        "arms": {arm: ARMS[arm] for arm in arms},
        "per_seed": table,
        "mean": {arm: {k: stat(np.mean, v) for k, v in cols.items()} for arm, cols in table.items()},
        "sd": {arm: {k: stat(partial(np.std, ddof=1), v) for k, v in cols.items()} for arm, cols in table.items()},
        "seconds": {f"{arm}_s{s}": runs[arm, s]["seconds"] for (arm, s) in runs},
    }

    names = [n for n in COLUMNS if n not in EXTRA]
    lines = [f"| arm | seed | {' | '.join(COLUMNS)} |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for arm in arms:
        for i, s in enumerate(seeds):
            lines.append(f"| {arm} | {s} | " + " | ".join(fmt(n, table[arm][n][i]) for n in COLUMNS) + " |")
        mean, sd = result["mean"][arm], result["sd"][arm]
        cells = " | ".join(f"**{fmt(n, mean[n])}** ± {fmt(n, sd[n])}" for n in COLUMNS)
        lines.append(f"| {arm} | mean ± sd | {cells} |")
    for other in (arm for arm in arms if arm != "default" and "default" in arms):
        diff = {n: [o - d for o, d in zip(table[other][n], table["default"][n])] for n in names}
        result[f"{other}_minus_default"] = diff
        wins = {n: sum((d < 0) if n != "Kendall tau" else (d > 0) for d in diff[n]) for n in names}
        lines += [
            "",
            f"{other} - default, per seed (paired): "
            + "; ".join(
                f"{n} {', '.join(fmt(n, d) for d in diff[n])} (better in {wins[n]}/{len(seeds)})" for n in names
            ),
        ]
    command = " ".join(["python -m evals.experiments.quickstart_seeds", *(sys.argv[1:] if argv is None else argv)])
    return write_outputs(a.output_dir, "quickstart_seeds", {"command": command, **result}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
