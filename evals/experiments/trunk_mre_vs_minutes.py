"""Held-out MRE against training minutes: which trunk depth, epochs and data size buy the best critic per minute.

Every option (trunk_layers L, epochs, share of the training prompts) is trained from the backbone for each seed
with ``LengthValueTrainer`` at the quickstart's training settings (its batch, max_length, truncated; learning rate
``BASE_LR`` unless ``--learning_rates``; ``L = 0`` is full fine-tuning), timed wall-clock from tokenizing the data to the end
of ``train()`` (the trunk pass included: no trunk cache is shared between runs), then judged the quickstart's way
on the held-out rollouts: the critic's length prediction at the prompt boundary against the return-consistent
truth of each prompt's finished samples (``lenvm_rl.metrics``). gamma is fixed for every run (``gamma="auto"``'s
rule on all training completions), so every option is scored against the same truths.

The held-out rollouts need at least ``--min_samples`` (16) samples per prompt, so the truth is not what limits
the MRE (its noise floor is reported beside it). A seed draws the data subset and the head's initialisation.
Results go to ``<output_dir>/results.json`` after every run; a rerun skips the runs already there (settings and
input files must match), so the script resumes. ``mre_vs_minutes.png`` plots each option's mean held-out MRE
(over seeds, bars: one standard deviation) against its mean minutes.

    python -m evals.experiments.trunk_mre_vs_minutes --train lenvm_runs/x/rollouts_train.jsonl \
        --heldout lenvm_runs/x/rollouts_heldout16.jsonl --layers 0,15,24,30 --epochs 1,3 --sizes 0.5,1 \
        --output_dir evals/results/trunk_mre_vs_minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

# Every option trained at full fine-tuning's rate unless --learning_rates says otherwise (option keys carry any other).
BASE_LR = 1e-4
TINY = dict(layers="0,1,2", epochs="1", sizes="0.5,1", seeds="0,1", min_samples=2)


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=12).hexdigest()


def subset(records: list[dict], share: float, seed: int) -> list[dict]:
    """All samples of a seeded ``share`` of the training prompts (at least one prompt)."""
    ids = sorted({str(r["prompt_id"]) for r in records})
    keep = set(random.Random(f"size-{seed}").sample(ids, max(1, round(share * len(ids)))))
    return [r for r in records if str(r["prompt_id"]) in keep]


def check_heldout(records: list[dict], min_samples: int) -> None:
    counts = Counter(str(r["prompt_id"]) for r in records)
    short = {p: n for p, n in counts.items() if n < min_samples}
    if short:
        raise ValueError(
            f"{len(short)} held-out prompts have fewer than {min_samples} samples (e.g. {dict(list(short.items())[:3])}); "
            "sample more (`lenvm rollouts --num_samples 16`) so the ground truth does not limit the MRE."
        )


def heldout_errors(model, tokenizer, heldout: list[dict], gamma: float) -> dict:
    """The quickstart's held-out judgement: predicted length at the prompt boundary against the return-consistent
    truth of the finished samples, and that truth's noise floor."""
    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.metrics import finished_lengths_by_prompt, per_prompt_truth, prediction_errors, truth_noise_floor

    lengths = finished_lengths_by_prompt(heldout)
    truth = per_prompt_truth(lengths, gamma)
    prompt_of = {r["prompt_id"]: r["prompt"] for r in heldout}
    ids = sorted(truth)
    predicted = LengthCritic(model, tokenizer).predict_length([prompt_of[i] for i in ids]).tolist()
    return prediction_errors(dict(zip(ids, predicted)), truth) | {"noise_floor": truth_noise_floor(lengths, truth)}


def train_one(
    model_path: str,
    records: list[dict],
    layers: int,
    epochs: float,
    seed: int,
    gamma: float,
    a,
    lr: float | None = None,
) -> tuple:
    """(trained model, tokenizer, minutes, trunk seconds, examples, tokens)."""
    import torch
    from transformers import AutoTokenizer

    from lenvm_rl.data import build_dataset
    from lenvm_rl.defaults import native_bf16
    from lenvm_rl.modeling import LengthValueModel
    from lenvm_rl.quickstart import QuickstartConfig
    from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

    q = QuickstartConfig()
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset, _ = build_dataset(records, tokenizer, max_length=q.max_length, truncated=q.truncated)
    torch.manual_seed(seed)  # the head's initialisation
    model = LengthValueModel.from_backbone(model_path, dtype=torch.float32)
    args = LengthValueConfig(
        output_dir=str(Path(a.output_dir) / "scratch"),
        overwrite_output_dir=True,
        gamma=gamma,
        truncated=q.truncated,
        max_length=q.max_length,
        num_train_epochs=epochs,
        learning_rate=lr or BASE_LR,
        per_device_train_batch_size=a.batch_size or q.per_device_train_batch_size,
        per_device_eval_batch_size=a.batch_size or q.per_device_train_batch_size,
        warmup_steps=0.05,
        weight_decay=0.0,
        bf16=native_bf16(),
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        trunk_layers=layers or None,
        padding_free=a.padding_free,
    )
    trainer = LengthValueTrainer(model, args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    minutes = (time.perf_counter() - t0) / 60
    tokens = sum(len(x) for x in dataset["input_ids"])
    return model.eval(), tokenizer, minutes, trainer.trunk_seconds or 0.0, len(dataset), tokens


def summarize(runs: dict) -> dict:
    """Mean and standard deviation over seeds of each option's minutes and MRE."""
    by_option: dict[str, list[dict]] = {}
    for r in runs.values():
        by_option.setdefault(r["option"], []).append(r)
    out = {}
    for option, rs in sorted(by_option.items()):
        mre, minutes = [r["errors"]["mre"] for r in rs], [r["minutes"] for r in rs]
        out[option] = {
            "layers": rs[0]["layers"],
            "epochs": rs[0]["epochs"],
            "size": rs[0]["size"],
            "learning_rate": rs[0].get("learning_rate"),
            "seeds": sorted(r["seed"] for r in rs),
            "mre_mean": float(np.mean(mre)),
            "mre_sd": float(np.std(mre, ddof=1)) if len(rs) > 1 else None,
            "minutes_mean": float(np.mean(minutes)),
            "minutes_sd": float(np.std(minutes, ddof=1)) if len(rs) > 1 else None,
        }
    return out


def plot(summary: dict, path: Path, title: str) -> Path:
    from lenvm_rl.plots import plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    layers = sorted({s["layers"] for s in summary.values()})
    colors = {n: plt.cm.viridis(i / max(1, len(layers) - 1)) for i, n in enumerate(layers)}
    sizes = sorted({s["size"] for s in summary.values()})
    markers = dict(zip(sizes, "osD^v<>p*"))
    for n in layers:
        pts = sorted((s for s in summary.values() if s["layers"] == n), key=lambda s: s["minutes_mean"])
        ax.plot([s["minutes_mean"] for s in pts], [100 * s["mre_mean"] for s in pts], color=colors[n], lw=0.8)
        for s in pts:
            ax.errorbar(
                s["minutes_mean"],
                100 * s["mre_mean"],
                xerr=s["minutes_sd"] or 0,
                yerr=100 * (s["mre_sd"] or 0),
                fmt=markers[s["size"]],
                color=colors[n],
                ms=4 + 2 * s["epochs"] ** 0.5,
                capsize=2,
            )
            ax.annotate(
                f"{s['epochs']:g} ep" + (f", lr {s['learning_rate']:g}" if s.get("learning_rate") else ""),
                (s["minutes_mean"], 100 * s["mre_mean"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for n in layers:
        ax.plot([], [], color=colors[n], label="full fine-tuning" if n == 0 else f"trunk L={n}")
    for size in sizes:
        ax.plot([], [], markers[size], color="gray", label=f"{100 * size:g} % of the data")
    ax.set_xlabel("training wall-clock minutes (trunk pass included)")
    ax.set_ylabel("held-out MRE (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="training rollouts (JSONL, `lenvm rollouts`)")
    p.add_argument("--heldout", required=True, help="held-out rollouts, >= --min_samples samples per prompt")
    p.add_argument("--model", default=None, help="backbone (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--layers", default="0,15,24,30", help="trunk_layers to try (0 = full fine-tuning, today's)")
    p.add_argument("--epochs", default="1,3")
    p.add_argument("--sizes", default="0.5,1", help="shares of the training prompts")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--learning_rates",
        default="",
        help=f"learning rates to try ('' = {BASE_LR:g}, full fine-tuning's); a head alone on frozen states wants a larger one",
    )
    p.add_argument("--min_samples", type=int, default=16, help="samples each held-out prompt needs")
    p.add_argument("--padding_free", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch_size", type=int, default=None, help="default: the quickstart's")
    p.add_argument("--output_dir", default="evals/results/trunk_mre_vs_minutes")
    p.add_argument("--tiny", action="store_true", help=f"smoke mode: {TINY}")
    a = p.parse_args(argv)
    if a.tiny:
        for k, v in TINY.items():
            setattr(a, k, v)
    from lenvm_rl.data import load_rollouts
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.returns import gamma_from_lengths

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = load_rollouts(a.train), load_rollouts(a.heldout)
    check_heldout(heldout, a.min_samples)
    model_path = resolve_model(a.model)
    gamma = gamma_from_lengths([r["num_tokens"] for r in train])
    settings = {
        "train": file_digest(a.train),
        "heldout": file_digest(a.heldout),
        "model": a.model or "smollm2-135m-instruct",
        "gamma": gamma,
        "padding_free": a.padding_free,
        "batch_size": a.batch_size,
    }
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"settings": settings, "runs": {}}
    if results["settings"] != settings:
        raise SystemExit(
            f"{results_file} holds runs made with other settings or inputs ({results['settings']} there, {settings} "
            "now); use another --output_dir."
        )
    default_lr = BASE_LR
    grid = [
        (int(n), float(e), float(s), float(lr) if lr else default_lr, int(seed))
        for n in a.layers.split(",")
        for e in a.epochs.split(",")
        for s in a.sizes.split(",")
        for lr in (a.learning_rates.split(",") if a.learning_rates else [""])
        for seed in a.seeds.split(",")
    ]
    for layers, epochs, size, lr, seed in grid:
        option = f"L{layers}_e{epochs:g}_n{size:g}" + ("" if lr == default_lr else f"_lr{lr:g}")
        key = f"{option}_s{seed}"
        if key in results["runs"]:
            continue
        print(f"[trunk_mre] {key}")
        model, tokenizer, minutes, trunk_s, n, tokens = train_one(
            model_path, subset(train, size, seed), layers, epochs, seed, gamma, a, lr
        )
        results["runs"][key] = {
            "option": option,
            "layers": layers,
            "epochs": epochs,
            "size": size,
            "learning_rate": lr,
            "seed": seed,
            "minutes": minutes,
            "trunk_seconds": trunk_s,
            "examples": n,
            "tokens_per_epoch": tokens,
            "errors": heldout_errors(model, tokenizer, heldout, gamma),
        }
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, results_file)  # after every run: an interruption loses at most the run under way
        print(f"  {minutes:.2f} min, held-out MRE {100 * results['runs'][key]['errors']['mre']:.1f} %")
    results["summary"] = summarize(results["runs"])
    results_file.write_text(json.dumps(results, indent=2))
    png = plot(
        results["summary"],
        out / "mre_vs_minutes.png",
        f"held-out MRE vs training minutes ({Path(settings['model']).name})",
    )
    lines = ["| option | seeds | minutes | held-out MRE |", "|---|---:|---:|---:|"]
    for option, s in results["summary"].items():
        sd = "" if s["mre_sd"] is None else f" ± {100 * s['mre_sd']:.1f}"
        lines.append(f"| {option} | {len(s['seeds'])} | {s['minutes_mean']:.2f} | {100 * s['mre_mean']:.1f} %{sd} |")
    print("\n".join(lines) + f"\n\nplot: {png}\nresults: {results_file}")
    return results


if __name__ == "__main__":
    main()
