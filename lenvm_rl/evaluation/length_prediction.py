"""`lenvm eval length_prediction`: how well the LenVM predicts answer length, against prompt-only baselines.

Held-out prompts (never trained on) are sampled ``--samples`` times each; the ground truth per prompt is the
return-consistent length of its finished samples (docs/method.md). Predictors, all judged on those prompts:

    LenVM                        ln(1 + V(s_0)) / ln(gamma) at the last prompt token
    train mean / (return-cons.)  one constant: the mean training length
    prompt-length regression     least squares of completion length on prompt length (training rollouts)
    bucket classifier (S3-style) a prompt-only classifier of the length bucket (quantiles of the training
                                 lengths) on mean-pooled hidden states of the frozen, untuned backbone; it
                                 predicts the return-consistent length of the chosen bucket

Also the LenVM's online error at 0 / 25 / 50 / 75 % of each held-out completion.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from . import common

NAME = "length_prediction"


def held_out_prompts(critic_path: str, source: str | None) -> tuple[list[dict], dict]:
    """Prompts to evaluate on: ``source`` (file / dataset id), or the quickstart's held-out split of the critic."""
    from ..quickstart import QuickstartConfig, split_prompts
    from ..rollouts import load_prompts

    stamp = Path(critic_path) / "quickstart_config.json"
    qs = (
        QuickstartConfig(
            **{k: v for k, v in json.loads(stamp.read_text()).items() if k in QuickstartConfig.__dataclass_fields__}
        )
        if stamp.is_file()
        else None
    )
    if source:
        return load_prompts(source), {} if qs is None else vars(qs)
    if qs is None:
        raise ValueError(
            f"{critic_path} was not made by `lenvm quickstart`, so its held-out split is unknown: pass "
            "--prompts FILE with prompts the critic never saw."
        )
    return split_prompts(load_prompts(qs.prompts), qs)[1], vars(qs)


def keep_categories(prompts: list[dict], categories: str) -> list[dict]:
    """The prompts whose ``category`` is one of the comma-separated ``categories``; a clear error when none is."""
    wanted = {c.strip() for c in categories.split(",") if c.strip()}
    kept = [p for p in prompts if p.get("category") in wanted]
    if not kept:
        have = sorted({str(p.get("category")) for p in prompts})
        raise ValueError(f"no prompt in categories {sorted(wanted)}; the prompts' categories are {have}")
    return kept


def errors_by_category(preds: dict, truth: dict, category_of: dict) -> dict:
    """``{category: {predictor: prediction_errors}}`` over each category's prompts; empty without categories or
    with only one (the overall table already says it)."""
    from ..metrics import prediction_errors

    cats = sorted({category_of.get(i) for i in truth} - {None})
    if len(cats) < 2:
        return {}
    out = {}
    for cat in cats:
        sub = {i: t for i, t in truth.items() if category_of.get(i) == cat}
        out[cat] = {name: prediction_errors(p, sub) for name, p in preds.items()}
    return out


def fit_prompt_length_regression(prompt_lengths, completion_lengths):
    """Least-squares line ``L = a + b * prompt_tokens``; returns a predictor clipped at 1 token."""
    x, y = np.asarray(prompt_lengths, float), np.asarray(completion_lengths, float)
    b = float(np.cov(x, y, bias=True)[0, 1] / x.var()) if x.var() > 0 else 0.0
    a = float(y.mean() - b * x.mean())
    return lambda n: max(1.0, a + b * n), {"intercept": a, "slope": b}


@torch.no_grad()
def prompt_features(model, prompt_ids: list[list[int]], batch_size: int = 16) -> torch.Tensor:
    """Mean-pooled last hidden states over each prompt's tokens (frozen backbone)."""
    from ..critic import left_pad

    feats = []
    device = next(model.parameters()).device
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = left_pad(prompt_ids[start : start + batch_size], 0)
        h = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.float()
        m = mask.to(device)[..., None].float()
        feats.append(((h * m).sum(1) / m.sum(1)).cpu())
    return torch.cat(feats)


def fit_bucket_classifier(
    features: torch.Tensor, lengths, gamma: float, n_buckets: int = 4, weight_decay: float = 1e-2, seed: int = 0
):
    """S3-style: quantile buckets of the training lengths, a multinomial logistic regression on prompt features.

    Returns ``predict(features) -> lengths`` (the return-consistent length of each row's most likely bucket).
    """
    from ..returns import return_consistent_length

    lengths = np.asarray(lengths)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)[1:-1]))
    bucket = np.searchsorted(edges, lengths, side="right")
    reps = [
        return_consistent_length(lengths[bucket == k].tolist(), gamma) if (bucket == k).any() else float("nan")
        for k in range(len(edges) + 1)
    ]
    mu, sd = features.mean(0), features.std(0) + 1e-6
    x, y = (features - mu) / sd, torch.as_tensor(bucket)
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x.shape[1], len(reps))
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(f: torch.Tensor) -> list[float]:
        with torch.no_grad():
            k = linear((f - mu) / sd).argmax(-1).tolist()
        return [reps[i] for i in k]

    return predict, {
        "bucket_edges": edges.tolist(),
        "bucket_lengths": reps,
        "train_accuracy": float((linear(x).argmax(-1) == y).float().mean()),
    }


@torch.no_grad()
def online_errors(critic, dataset) -> dict:
    """The LenVM's value MSE and relative error at 0 / 25 / 50 / 75 % of each completion (trainer metrics).

    Rows go shortest first, so each of the critic's batches is computed only as wide as its longest row."""
    from transformers import EvalPrediction

    from ..data import LengthValueCollator
    from ..trainer import value_metrics

    rows = sorted((dataset[i] for i in range(len(dataset))), key=lambda r: len(r["input_ids"]))
    batch = LengthValueCollator(critic._pad_id())([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    values = critic.values(batch["input_ids"], batch["attention_mask"]).float().numpy()
    return value_metrics(EvalPrediction(predictions=values, label_ids=batch["labels"].numpy()), critic.gamma)


def plot(results: dict, truth: dict, predictions: dict, path: Path) -> Path:
    from ..plots import plt, save_figure

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(results)
    ax1.barh(names, [100 * results[n]["mre"] for n in names], color=["tab:orange"] + ["tab:gray"] * (len(names) - 1))
    ax1.invert_yaxis()
    ax1.set_xlabel("MRE at the prompt boundary (%)")
    ax1.set_title("length prediction on held-out prompts (lower is better)")
    ids = sorted(truth)
    hi = 1.05 * max([truth[i] for i in ids] + [p[i] for p in predictions.values() for i in ids])
    for name, pred in predictions.items():
        ax2.scatter([truth[i] for i in ids], [pred[i] for i in ids], s=16, alpha=0.7, label=name)
    ax2.plot([0, hi], [0, hi], color="gray", ls="--", lw=1)
    ax2.set(xlabel="return-consistent sampled length L_GT", ylabel="predicted length", title="per prompt")
    ax2.legend(fontsize=8)
    return save_figure(fig, path)


def markdown(result: dict) -> str:
    lines = [
        f"### Length prediction ({result['prompts']} held-out prompts x {result['samples']} samples, "
        f"gamma = {result['gamma']:.4f})",
        "",
        "| predictor | MRE | MAE (tokens) | Kendall tau | within 50 tok | within 100 tok |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["predictors"].items():
        tau = "-" if math.isnan(m["kendall_tau"]) else f"{m['kendall_tau']:.2f}"
        lines.append(
            f"| {name} | {100 * m['mre']:.1f} % | {m['mae']:.1f} | {tau} | {100 * m['within_50']:.0f} % | "
            f"{100 * m['within_100']:.0f} % |"
        )
    o = result["online"]
    lines += [
        "",
        f"Noise floor of the ground truth: about {100 * result['truth_noise_floor_mre']:.1f} % MRE (what a predictor "
        "that knew each prompt's expected length would score against this many samples).",
        "",
        "LenVM online relative error of the remaining length, by position in each held-out completion:",
        "",
        "| 0 % | 25 % | 50 % | 75 % | value MSE |",
        "|---:|---:|---:|---:|---:|",
        f"| {100 * o['online_re_0']:.1f} % | {100 * o['online_re_25']:.1f} % | {100 * o['online_re_50']:.1f} % | "
        f"{100 * o['online_re_75']:.1f} % | {o['value_mse']:.4f} |",
        "",
    ]
    by_cat = result.get("by_category") or {}
    if by_cat:
        names = list(next(iter(by_cat.values())))
        lines += [
            "MRE by prompt category (prompts in each):",
            "",
            "| category | prompts | " + " | ".join(names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for cat, per in by_cat.items():
            cells = " | ".join(f"{100 * per[n]['mre']:.1f} %" for n in names)
            lines.append(f"| {cat} | {per[names[0]]['prompts']} | {cells} |")
        lines.append("")
    return "\n".join(lines)


@dataclass
class LengthPredictionArguments(common.EvalArguments):
    """Arguments of `lenvm eval length_prediction`."""

    prompts: str | None = field(
        default=None,
        metadata={"help": "Held-out prompts (file or dataset id); default: the quickstart's held-out split."},
    )
    train_rollouts: str | None = field(
        default=None,
        metadata={
            "help": "The critic's training rollouts, for the baselines (default: rollouts_train.jsonl beside it)."
        },
    )
    categories: str | None = field(
        default=None,
        metadata={
            "help": "Keep only the prompts of these comma-separated categories (their 'category' column), e.g. "
            "built-in categories the critic never trained on: how it generalises to unseen styles."
        },
    )
    samples: int = field(default=16, metadata={"help": "Samples per held-out prompt."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Generation cap (default: the quickstart's)."})
    buckets: int = field(default=4, metadata={"help": "Length buckets of the S3-style classifier."})
    backend: Literal["hf", "hf_continuous", "vllm"] = field(
        default="hf",
        metadata={
            "help": "Sampler of the held-out rollouts: 'hf' (padded batches), 'hf_continuous' (continuous "
            "batching, the same distribution) or 'vllm'."
        },
    )


def main(argv=None) -> dict:
    a = common.parse_args(LengthPredictionArguments, NAME, __doc__.split("\n")[0], argv)
    if a.tiny:
        a.samples, a.max_new_tokens = 3, a.max_new_tokens or 16
    common.setup_threads()

    from transformers import AutoModel

    from ..data import build_dataset, load_rollouts
    from ..defaults import resolve_model
    from ..metrics import (
        answer_tokens,
        finished_lengths_by_prompt,
        per_prompt_truth,
        prediction_errors,
        train_mean_baselines,
        truth_noise_floor,
    )
    from ..rollouts import SamplingConfig, generate_rollouts

    critic = common.load_critic(a.critic)
    gamma, tokenizer = critic.gamma, critic.tokenizer
    prompts, qs = held_out_prompts(a.critic, a.prompts)
    if a.categories:
        prompts = keep_categories(prompts, a.categories)
    if a.tiny:
        prompts = prompts[:4]
    train_file = Path(a.train_rollouts or Path(a.critic).parent / "rollouts_train.jsonl")
    if not train_file.is_file():
        raise FileNotFoundError(
            f"{train_file} not found: the baselines learn from the critic's training rollouts; "
            "pass --train-rollouts FILE."
        )
    train_records = [r for r in load_rollouts(train_file) if r["finish_reason"] == "stop"]
    seen = {json.dumps(r["prompt"], sort_keys=True) for r in train_records}
    leaked = [p["prompt_id"] for p in prompts if json.dumps(p["prompt"], sort_keys=True) in seen]
    if leaked:
        raise ValueError(
            f"{len(leaked)} evaluation prompts are in the critic's training rollouts (e.g. {leaked[0]}); "
            "evaluate on prompts it never saw."
        )

    # Held-out samples (appended and resumable, like any rollouts file).
    out = Path(a.output_dir)
    sampling = SamplingConfig(
        num_samples=a.samples,
        max_new_tokens=a.max_new_tokens or qs.get("max_new_tokens", 256),
        temperature=qs.get("temperature", 0.7),
        top_p=qs.get("top_p", 0.9),
        seed=a.seed,
    )
    heldout_file = generate_rollouts(
        prompts,
        out / f"rollouts_heldout_{a.samples}.jsonl",
        model=a.generator or qs.get("model"),
        sampling=sampling,
        batch_size=a.batch_size,
        backend=a.backend,
        use_chat_template=critic.use_chat_template,
    )  # the critic's prompt format
    records = load_rollouts(heldout_file)
    lengths = finished_lengths_by_prompt(records)
    if not lengths:
        raise ValueError("no held-out prompt has two finished samples; raise --max-new-tokens or --samples")
    truth = per_prompt_truth(lengths, gamma)
    ids = sorted(truth)
    prompt_of = {r["prompt_id"]: r["prompt"] for r in records}
    heldout_ids = critic._encode_prompts([prompt_of[i] for i in ids])

    # Predictors.
    preds = {"LenVM": dict(zip(ids, critic.predict_length(prompt_ids=heldout_ids).tolist()))}
    train_lengths = [answer_tokens(r) for r in train_records]
    for name, const in train_mean_baselines(train_lengths, gamma).items():
        preds[f"{name} ({const:.0f} tok)"] = {i: const for i in ids}
    train_prompt_ids = critic._encode_prompts([r["prompt"] for r in train_records])
    regress, reg_info = fit_prompt_length_regression([len(x) for x in train_prompt_ids], train_lengths)
    preds["prompt-length regression"] = {i: regress(len(x)) for i, x in zip(ids, heldout_ids)}
    # The critic's backbone is tuned for length; S3 uses an off-the-shelf encoder, so load the untuned one.
    base = AutoModel.from_pretrained(resolve_model(a.generator or qs.get("model")), dtype=torch.float32).eval()
    classify, clf_info = fit_bucket_classifier(
        prompt_features(base, train_prompt_ids), train_lengths, gamma, a.buckets, seed=a.seed
    )
    preds["bucket classifier (S3-style)"] = dict(zip(ids, classify(prompt_features(base, heldout_ids))))
    del base

    heldout_ds, stats = build_dataset(records, tokenizer, use_chat_template=critic.use_chat_template, truncated="drop")
    result = {
        "command": common.command_line(NAME, argv),
        "critic": a.critic,
        "gamma": gamma,
        "prompts": len(ids),
        "samples": a.samples,
        "heldout_rollouts": str(heldout_file),
        "heldout": stats.summary(),
        "train_rollouts": str(train_file),
        "train_completions": len(train_records),
        "predictors": {n: prediction_errors(p, truth) for n, p in preds.items()},
        "truth_noise_floor_mre": truth_noise_floor(lengths, truth),
        "by_category": errors_by_category(preds, truth, {p["prompt_id"]: p.get("category") for p in prompts}),
        "online": online_errors(critic, heldout_ds),
        "regression": reg_info,
        "bucket_classifier": clf_info,
    }
    plot(
        result["predictors"],
        truth,
        {k: v for k, v in preds.items() if "train mean length" not in k},
        out / f"{NAME}.png",
    )
    return common.write_outputs(out, NAME, result, markdown(result))
