"""A critic trained on more prompt styles: the quickstart's default against the same data plus the four built-in
categories it leaves out (code, length_request, multi_turn, rewrite), paired by seed.

The default critic predicts lengths on those four styles worse than a constant (evals/results/
length_prediction_unseen). Does training on them fix that, and at what cost on the seven it already knows?

For seed k, the default arm is that seed's default quickstart run (its model and its held-out split). The broad
arm trains on the same training rollouts plus one completion (sample k) of every training prompt of the four extra
categories, with the quickstart's settings and the default's gamma. The extra categories' held-out prompts are
drawn with the quickstart's own split (4 per category, seed k). Both arms are judged on the same prompts, samples
and ground truth: the default run's 28 held-out prompts plus the 16 extra ones, 4 samples each. The extra
completions come from one sampling with the quickstart's settings (``--extra_rollouts``, e.g. the rollouts of
``lenvm eval length_prediction --categories code,length_request,multi_turn,rewrite --samples 4``). Beside each
critic: its own train-mean constant (return-consistent), the control with no critic.

Rule fixed before the runs: the broad set becomes the quickstart's default only if, on every seed, the broad
critic has the lower MRE and MAE on all 44 held-out prompts, and its MRE on the 28 prompts of the seven default
categories is, averaged over seeds, at most 2 points above the default critic's.

    python -m evals.experiments.broad_categories --seeds 0,1,2 --runs_dir lenvm_runs/seeds \
        --extra_rollouts lenvm_runs/unseen_default/rollouts_heldout_4.jsonl --output_dir evals/results/broad_categories
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

EXTRA = ("code", "length_request", "multi_turn", "rewrite")
SUBSETS = ("all", "default categories", "extra categories")
METRICS = ("mre", "mae", "kendall_tau")


def broad_split(extra: list[dict], seed: int, per_category: int) -> tuple[list[dict], list[dict]]:
    """(training records: sample ``seed`` of each training prompt, held-out records: all samples of each held-out
    prompt) of the extra categories; the held-out prompts are the quickstart's own draw for this seed."""
    from lenvm_rl.quickstart import QuickstartConfig, split_prompts

    prompts = list({r["prompt_id"]: {"prompt_id": r["prompt_id"], "category": r["category"]} for r in extra}.values())
    cfg = QuickstartConfig(categories=",".join(EXTRA), eval_prompts_per_category=per_category, seed=seed)
    held = {p["prompt_id"] for p in split_prompts(prompts, cfg)[1]}
    train = [r for r in extra if r["prompt_id"] not in held and r["sample_index"] == seed]
    if len(train) != len(prompts) - len(held):
        raise SystemExit(f"--extra_rollouts lacks sample {seed} of some prompts: sample at least {seed + 1} per prompt")
    return train, [r for r in extra if r["prompt_id"] in held]


def check_same_sampling(extra: list[dict], base: list[dict]) -> None:
    """The extra completions must come from the generator and sampling settings of the default run."""
    keys = ("temperature", "top_p", "max_new_tokens")
    want = {(r["generator"], *(r["sampling"][k] for k in keys)) for r in base}
    got = {(r["generator"], *(r["sampling"][k] for k in keys)) for r in extra}
    if got != want:
        raise SystemExit(f"--extra_rollouts were sampled with {sorted(got)}, the default run with {sorted(want)}")
    if missing := set(EXTRA) - {r["category"] for r in extra}:
        raise SystemExit(f"--extra_rollouts has no prompts of {sorted(missing)}")


def train_broad(default_dir: Path, out: Path, train: list[dict], heldout: list[dict]) -> dict:
    """The broad arm's quickstart report (trained unless ``out`` holds a run with the same settings)."""
    from lenvm_rl.quickstart import QuickstartConfig, finished_report, train_and_report

    m = json.loads((default_dir / "metrics.json").read_text())
    base = QuickstartConfig.from_report(m)
    cfg = replace(base, output_dir=str(out), categories=f"{base.categories},{','.join(EXTRA)}", gamma=str(m["gamma"]))
    return finished_report(cfg) or train_and_report(cfg, train, heldout)


def judge(critic_dir: Path, heldout: list[dict], train: list[dict], gamma: float, default_cats: set) -> dict:
    """Errors of a critic and of its train-mean constant on the held-out records, by subset."""
    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.metrics import (
        answer_tokens,
        finished_lengths_by_prompt,
        per_prompt_truth,
        prediction_errors,
        train_mean_baselines,
    )

    truth = per_prompt_truth(finished_lengths_by_prompt(heldout), gamma)
    ids = sorted(truth)
    prompt_of = {r["prompt_id"]: r["prompt"] for r in heldout}
    category_of = {r["prompt_id"]: r["category"] for r in heldout}
    critic = LengthCritic.from_pretrained(critic_dir)
    if abs(critic.gamma - gamma) > 1e-9:
        raise SystemExit(f"{critic_dir} has gamma {critic.gamma}, the ground truth uses {gamma}")
    predicted = dict(zip(ids, critic.predict_length([prompt_of[i] for i in ids]).tolist()))
    finished = [answer_tokens(r) for r in train if r["finish_reason"] == "stop"]
    name, const = next((k, v) for k, v in train_mean_baselines(finished, gamma).items() if "return-consistent" in k)
    subsets = {
        "all": ids,
        "default categories": [i for i in ids if category_of[i] in default_cats],
        "extra categories": [i for i in ids if category_of[i] not in default_cats],
    }
    out = {}
    for subset, keep in subsets.items():
        t = {i: truth[i] for i in keep}
        out[subset] = {
            "critic": prediction_errors({i: predicted[i] for i in keep}, t),
            "constant": prediction_errors({i: const for i in keep}, t),
            "n_prompts": len(keep),
        }
    return out | {"constant": const, "constant_name": name}


def table(per_seed: dict, seeds: list[int]) -> list[str]:
    """One row per arm and seed: the critic's MRE / MAE / tau on each subset, its train-mean constant's MRE after."""
    lines = [
        "| arm | seed | " + " | ".join(f"{s}: MRE / MAE / tau (constant's MRE)" for s in SUBSETS) + " |",
        "|---|---:|" + "---|" * len(SUBSETS),
    ]
    for arm in ("default", "broad"):
        for s in seeds:
            r = per_seed[s][arm]
            cells = [
                f"{100 * r[sub]['critic']['mre']:.1f} % / {r[sub]['critic']['mae']:.1f} / "
                f"{r[sub]['critic']['kendall_tau']:.2f} ({100 * r[sub]['constant']['mre']:.1f} %)"
                for sub in SUBSETS
            ]
            lines.append(f"| {arm} | {s} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs_dir", default="lenvm_runs/seeds", help="holds default_s<k> (quickstart_seeds' runs)")
    p.add_argument("--extra_rollouts", required=True, help="completions of the four extra categories' prompts")
    p.add_argument("--eval_prompts_per_category", type=int, default=4)
    p.add_argument("--output_dir", default="evals/results/broad_categories")
    a = p.parse_args(argv)
    from lenvm_rl.data import load_rollouts
    from lenvm_rl.evaluation.common import write_outputs

    seeds = [int(s) for s in a.seeds.split(",")]
    runs, extra = Path(a.runs_dir), load_rollouts(a.extra_rollouts)
    per_seed = {}
    for s in seeds:
        default_dir = runs / f"default_s{s}"
        base_train = load_rollouts(default_dir / "rollouts_train.jsonl")
        base_held = load_rollouts(default_dir / "rollouts_heldout.jsonl")
        check_same_sampling(extra, base_train)
        extra_train, extra_held = broad_split(extra, s, a.eval_prompts_per_category)
        heldout = base_held + extra_held
        broad_dir = runs / f"broad_s{s}"
        report = train_broad(default_dir, broad_dir, base_train + extra_train, heldout)
        default_cats = {r["category"] for r in base_train}
        per_seed[s] = {
            "default": judge(default_dir / "model", heldout, base_train, report["gamma"], default_cats),
            "broad": judge(broad_dir / "model", heldout, base_train + extra_train, report["gamma"], default_cats),
            "heldout_cut": sum(r["finish_reason"] != "stop" for r in heldout) / len(heldout),
            "train": {"default": len(base_train), "broad": len(base_train) + len(extra_train)},
            "broad_report": {k: report[k] for k in ("train", "heldout", "seconds")},
        }
        print("\n".join(table(per_seed, [s])))

    diff = {
        sub: {
            k: [per_seed[s]["broad"][sub]["critic"][k] - per_seed[s]["default"][sub]["critic"][k] for s in seeds]
            for k in METRICS
        }
        for sub in SUBSETS
    }
    rule = {
        "lower_mre_and_mae_all_seeds": all(d < 0 for d in diff["all"]["mre"] + diff["all"]["mae"]),
        "default_categories_mre_within_2_points": float(np.mean(diff["default categories"]["mre"])) <= 0.02,
    }
    result = {
        "seeds": seeds,
        "extra_categories": EXTRA,
        "per_seed": per_seed,
        "broad_minus_default": diff,
        "rule": rule,
        "switch_default": all(rule.values()),
    }
    lines = table(per_seed, seeds) + [""]
    for sub in SUBSETS:
        parts = [
            f"{k} " + ", ".join(f"{100 * d:+.1f}" if k == "mre" else f"{d:+.2f}" for d in diff[sub][k]) for k in METRICS
        ]
        lines.append(f"- broad - default on {sub} (per seed): " + "; ".join(parts))
    lines.append(f"- rule: {rule} -> switch the default: {result['switch_default']}")
    command = " ".join(["python -m evals.experiments.broad_categories", *(sys.argv[1:] if argv is None else argv)])
    return write_outputs(a.output_dir, "broad_categories", {"command": command, **result}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
