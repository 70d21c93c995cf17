"""`lenvm quickstart`: the whole method in one offline run, read top to bottom.

    1. sample   completions from the generator over the built-in prompts (cached, resumable)
    2. build    value targets G_t = -(1 - gamma ** n_t) at every completion token
    3. train    a LenVM (SmolLM2 backbone + value head) with the token-mean squared error
    4. evaluate on held-out prompts: MRE at the prompt boundary against the train-mean baseline,
                online error at 0 / 25 / 50 / 75 % of each completion
    5. show     a PNG of predicted vs. true remaining length and a markdown summary

A second run reuses the cached rollouts (and the trained model when the settings are unchanged).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .candidates import rollout_sampling
from .critic import LengthCritic
from .data import build_dataset, completion_lengths, load_rollouts
from .defaults import DEFAULT_MODEL, native_bf16, resolve_model
from .metrics import (
    finished_lengths_by_prompt,
    per_prompt_truth,
    prediction_errors,
    train_mean_baselines,
    truth_noise_floor,
)
from .modeling import LengthValueModel, is_checkpoint_dir
from .plots import plot_remaining_length
from .returns import value_to_remaining
from .rollouts import SamplingConfig, generate_rollouts, load_prompts
from .trainer import LengthValueConfig, LengthValueTrainer

# Fields that change how a run is carried out, not what it samples or trains: left out of the training key.
HOW_NOT_WHAT = frozenset({"output_dir", "generation_batch_size", "backend", "overwrite", "padding_free"})


@dataclass
class QuickstartConfig:
    """Settings of `lenvm quickstart` (every field is also a flag and a key of recipes/quickstart.yaml)."""

    output_dir: str = field(default="lenvm_runs/quickstart", metadata={"help": "Where rollouts, model and report go."})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Generator and LenVM backbone (hub id or path)."})
    prompts: str = field(default="builtin", metadata={"help": "Prompt source: 'builtin', a file or a dataset id."})
    categories: str = field(
        default="one_word,yes_no,short_fact,list,explain,steps,story,code,length_request,multi_turn,rewrite",
        metadata={
            "help": "Comma-separated categories of the built-in prompts ('' = all). "
            "'long' is left out by default: its answers outrun the CPU budget. The last four (code, "
            "length_request, multi_turn, rewrite) take about 1.4x the time and give a critic that predicts those "
            "styles far better (evals/experiments/broad_categories.py)."
        },
    )
    eval_prompts_per_category: int = field(default=4, metadata={"help": "Held-out prompts per category."})
    validation_prompts_per_category: int = field(
        default=0,
        metadata={
            "help": "Training prompts per category held back as a validation split (0 = none): the trainer "
            "scores them after every epoch and keeps the epoch with the lowest validation loss, so the number "
            "of epochs is chosen without looking at the held-out prompts."
        },
    )
    train_samples: int = field(
        default=2,
        metadata={
            "help": "Completions per training prompt. Two end more length-guided answers naturally than one on a "
            "fresh LIFEBench draw, on every seed tried (evals/results, 'Two answers per prompt'); 1 samples the "
            "training prompts once and trains faster."
        },
    )
    eval_samples: int = field(default=4, metadata={"help": "Completions per held-out prompt (for L_GT)."})
    max_new_tokens: int = field(
        default=256,
        metadata={
            "help": "Generation cap; cut completions train as censored "
            "rows (a lower bound on their length, see truncated)."
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling."})
    generation_batch_size: int = field(default=64, metadata={"help": "Rows sampled at once."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "Rollout sampler: 'auto' (the CPU engine, CTranslate2, on CPU; vLLM on CUDA; else hf, saying "
            "why), 'ctranslate2', 'hf' (padded generate batches, the reference) or 'hf_continuous'. All sample the "
            "same model and settings (evals/benchmarks/rollout_sampler.py)."
        },
    )
    gamma: str = field(default="auto", metadata={"help": "Discount, or 'auto' from the 99th-percentile length."})
    truncated: str = field(
        default="censor",
        metadata={
            "help": "Training completions cut at max_new_tokens: 'censor' "
            "(one-sided loss, the default) or 'drop'. The held-out "
            "evaluation always uses finished completions only."
        },
    )
    num_train_epochs: float = field(
        default=1.0,
        metadata={
            "help": "Epochs over the training rollouts. One packed epoch of full fine-tuning (about 15 minutes on 2 CPU "
            "cores) gave the most accurate critic measured; trunk features were cheaper and much worse "
            "(evals/experiments/trunk_mre_vs_minutes.py). 3 was the default before."
        },
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "AdamW learning rate. None: 1e-3 when only the head trains (trunk_layers -1 or all layers), "
            "1e-4 when backbone layers train (the rates each was measured at)."
        },
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Sequences per step."})
    freeze_layers: int = field(
        default=0,
        metadata={"help": "Freeze the embeddings and the lowest N backbone layers (0 = train all; fewer is slower)."},
    )
    trunk_layers: int = field(
        default=0,
        metadata={
            "help": "Trunk features: run the embeddings and the lowest N layers once over the data and train only "
            "the layers above and the head on their cached output. 0: full fine-tuning (the default); -1: all "
            "layers, a head on the frozen model's own final states (about 4x cheaper, a much weaker critic: "
            "evals/experiments/trunk_mre_vs_minutes.py). Exclusive with freeze_layers."
        },
    )
    padding_free: bool = field(
        default=True, metadata={"help": "Pack training rows without padding (the same loss, 2.6x the tokens/s on CPU)."}
    )
    max_length: int = field(default=512, metadata={"help": "Longest prompt + completion."})
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 autocast; default: on where the machine computes "
            "bf16 natively (CUDA, AVX512-BF16 / AMX CPUs)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for the prompt split, sampling and training."})
    overwrite: bool = field(default=False, metadata={"help": "Retrain even if a model with other settings exists."})

    @classmethod
    def from_report(cls, report: dict) -> QuickstartConfig:
        """The settings a run's metrics.json records; keys this version does not know (removed fields) are ignored
        and fields added since take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in report["config"].items() if k in known})

    def training_key(self) -> dict:
        """The settings a cached model depends on."""
        return {k: v for k, v in asdict(self).items() if k not in HOW_NOT_WHAT}

    def settings_differing_from(self, stamp: dict) -> dict:
        """``{field: (stamp's value, ours)}`` where a saved training key differs; a field it lacks (added later)
        counts at its default."""
        defaults = {f.name: f.default for f in fields(self)}
        key = self.training_key()
        return {k: (stamp.get(k, defaults[k]), v) for k, v in key.items() if stamp.get(k, defaults[k]) != v}

    def trained_with_same_settings(self, stamp: dict) -> bool:
        """``stamp`` (a saved training key) matches; a field it lacks (added later) matches at its default."""
        return not self.settings_differing_from(stamp) and set(stamp) <= set(self.training_key())


def split_prompts(prompts: list[dict], cfg: QuickstartConfig) -> tuple[list[dict], list[dict]]:
    """Held-out prompts: ``eval_prompts_per_category`` per category, chosen with the seed; never trained on."""
    wanted = {c for c in cfg.categories.split(",") if c}
    if wanted:
        prompts = [p for p in prompts if p.get("category") in wanted]
        if not prompts:
            raise ValueError(f"no prompts in categories {sorted(wanted)}")
    rng = random.Random(cfg.seed)
    held = set()
    for ids in _ids_by_category(prompts).values():
        held.update(rng.sample(ids, min(cfg.eval_prompts_per_category, len(ids) - 1)))
    return _partition(prompts, held)


def split_validation(train_prompts: list[dict], cfg: QuickstartConfig) -> tuple[list[dict], list[dict]]:
    """``validation_prompts_per_category`` of the training prompts per category, chosen with the seed (a draw of
    its own, so the held-out split does not move); the rest stay training prompts."""
    n = cfg.validation_prompts_per_category
    if n < 0:
        raise ValueError(f"validation_prompts_per_category must be >= 0, got {n}")
    if n == 0:
        return train_prompts, []
    rng = random.Random(f"validation-{cfg.seed}")
    val = set()
    for cat, ids in _ids_by_category(train_prompts).items():
        if len(ids) <= n:
            raise ValueError(
                f"category {cat!r} has {len(ids)} training prompts, too few to hold back {n} for validation; "
                "lower validation_prompts_per_category."
            )
        val.update(rng.sample(ids, n))
    return _partition(train_prompts, val)


def _settings_diff(cfg: QuickstartConfig, stamp: Path) -> str:
    """' (train_samples: 1 there, 2 now)' for the fields where a saved training key differs, '' without one."""
    if not stamp.is_file():
        return ""
    diff = cfg.settings_differing_from(json.loads(stamp.read_text()))
    return f" ({'; '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())})" if diff else ""


def finished_report(cfg: QuickstartConfig) -> dict | None:
    """The metrics.json in ``cfg.output_dir`` when a run with the same training settings wrote it, else None: lets
    experiments that run many quickstarts resume."""
    path = Path(cfg.output_dir) / "metrics.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    # The recorded settings as they are: a field this version no longer has makes the run another one, as it does
    # for the model's own reuse check (a report lacking a newer field matches at that field's default).
    stamp = {k: v for k, v in report["config"].items() if k not in HOW_NOT_WHAT}
    return report if cfg.trained_with_same_settings(stamp) else None


def _ids_by_category(prompts: list[dict]) -> dict[str, list[str]]:
    """Sorted prompt ids per category, categories in sorted order: a fixed order for the seeded draws."""
    by_cat = defaultdict(list)
    for p in prompts:
        by_cat[p.get("category", "all")].append(p["prompt_id"])
    return {cat: sorted(by_cat[cat]) for cat in sorted(by_cat)}


def _partition(prompts: list[dict], chosen: set) -> tuple[list[dict], list[dict]]:
    """(prompts not chosen, prompts chosen), each in the original order."""
    return [p for p in prompts if p["prompt_id"] not in chosen], [p for p in prompts if p["prompt_id"] in chosen]


def run_quickstart(cfg: QuickstartConfig) -> dict:
    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. sample ------------------------------------------------------------------------------------
    train_prompts, eval_prompts = split_prompts(load_prompts(cfg.prompts), cfg)
    print(
        f"[lenvm] 1/5 sampling: {len(train_prompts)} training prompts x {cfg.train_samples}, "
        f"{len(eval_prompts)} held-out prompts x {cfg.eval_samples} from {cfg.model}"
    )
    common = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    gen = dict(model=cfg.model, batch_size=cfg.generation_batch_size, backend=cfg.backend)
    train_file = generate_rollouts(
        train_prompts,
        out / "rollouts_train.jsonl",
        sampling=SamplingConfig(num_samples=cfg.train_samples, **common),
        **gen,
    )
    eval_file = generate_rollouts(
        eval_prompts,
        out / "rollouts_heldout.jsonl",
        sampling=SamplingConfig(num_samples=cfg.eval_samples, **common),
        **gen,
    )
    train_records, eval_records = load_rollouts(train_file), load_rollouts(eval_file)
    # The validation prompts' completions come out of the training rollouts (same sampling, same cache).
    val_ids = {p["prompt_id"] for p in split_validation(train_prompts, cfg)[1]}
    val_records = [r for r in train_records if r["prompt_id"] in val_ids]
    train_records = [r for r in train_records if r["prompt_id"] not in val_ids]
    report = train_and_report(cfg, train_records, eval_records, val_records, sampling_seconds=time.time() - t0)
    print(f"  rollouts: {train_file}, {eval_file}")
    return report


def resolve_trunk_and_rate(cfg: QuickstartConfig, model_path: str) -> tuple[int, float]:
    """``trunk_layers`` -1 -> the backbone's layer count; the learning rate of what trains when none is set."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    n = getattr(config.get_text_config(), "num_hidden_layers", None)
    if cfg.trunk_layers < -1:
        raise ValueError(f"trunk_layers must be -1 (all layers), 0 (full fine-tuning) or 1..N, got {cfg.trunk_layers}")
    layers = cfg.trunk_layers
    if layers == -1:
        if n is None:
            raise ValueError(
                f"{model_path} does not say how many layers it has; set trunk_layers to a number (0: all train)."
            )
        layers = n
    if layers and cfg.freeze_layers:
        raise ValueError("trunk_layers already freezes the lowest layers; set trunk_layers 0 to use freeze_layers.")
    head_only = bool(layers) and layers == n
    return layers, cfg.learning_rate or (1e-3 if head_only else 1e-4)


def train_and_report(
    cfg: QuickstartConfig,
    train_records: list[dict],
    eval_records: list[dict],
    val_records: list[dict] = (),
    sampling_seconds: float = 0.0,
) -> dict:
    """Steps 2-5 of the quickstart on rollouts already sampled: build the targets, train (or reuse the model in
    ``<output_dir>/model`` trained with the same settings), judge it on the held-out records beside the train-mean
    constants, and write metrics.json and summary.md. Experiments call it with rollouts drawn their own way."""
    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the value head's initialisation, whether or not sampling ran in this process
    model_path = resolve_model(cfg.model)

    # 2. build targets -----------------------------------------------------------------------------
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_ds, train_stats = build_dataset(train_records, tokenizer, max_length=cfg.max_length, truncated=cfg.truncated)
    # Ground truth needs finished completions: the held-out set drops cut ones.
    eval_ds, eval_stats = build_dataset(eval_records, tokenizer, max_length=cfg.max_length, truncated="drop")
    val_ds = None
    if val_records:  # scored with the training loss (censored rows too), to choose the epoch
        val_ds, val_stats = build_dataset(val_records, tokenizer, max_length=cfg.max_length, truncated=cfg.truncated)
        print(f"[lenvm]      validation: {val_stats.summary()}")
    print(f"[lenvm] 2/5 targets: train {train_stats.summary()}; held-out {eval_stats.summary()}")

    # 3. train -------------------------------------------------------------------------------------
    model_dir = out / "model"
    trunk_layers, learning_rate = resolve_trunk_and_rate(cfg, model_path)
    args = LengthValueConfig(
        output_dir=str(model_dir),
        gamma=cfg.gamma,
        truncated=cfg.truncated,
        max_length=cfg.max_length,
        num_train_epochs=cfg.num_train_epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        freeze_layers=cfg.freeze_layers,
        trunk_layers=trunk_layers or None,
        padding_free=cfg.padding_free,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        warmup_steps=0.05,
        weight_decay=0.0,
        bf16=native_bf16() if cfg.bf16 is None else cfg.bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=cfg.seed,
        report_to=[],
        logging_steps=5,
        overwrite_output_dir=True,
        disable_tqdm=False,
        dataloader_num_workers=0,
        **_epoch_selection(val_ds is not None),
    )
    stamp = model_dir / "quickstart_config.json"
    reused = (
        is_checkpoint_dir(model_dir)
        and stamp.is_file()
        and cfg.trained_with_same_settings(json.loads(stamp.read_text()))
        and not cfg.overwrite
    )
    if reused:
        print(f"[lenvm] 3/5 training: reusing the model in {model_dir} (same settings; --overwrite retrains)")
        model = LengthValueModel.from_pretrained(model_dir)
        trainer = LengthValueTrainer(model, args, eval_dataset=val_ds or eval_ds, processing_class=tokenizer)
    else:
        if is_checkpoint_dir(model_dir) and not cfg.overwrite:
            raise FileExistsError(
                f"{model_dir} holds a LenVM trained with other settings{_settings_diff(cfg, stamp)}; pass "
                "--overwrite to replace it, or choose another --output_dir."
            )
        print(
            f"[lenvm] 3/5 training a LenVM on {cfg.model} ({len(train_ds)} completions, "
            f"{sum(len(x) for x in train_ds['input_ids'])} tokens per epoch)"
        )
        trainer = LengthValueTrainer(
            model_path, args, train_dataset=train_ds, eval_dataset=val_ds or eval_ds, processing_class=tokenizer
        )
        trainer.train()
        # saved in lenvm_config.json: guided decoding's candidates follow the sampling of the critic's training answers
        trainer.accelerator.unwrap_model(trainer.model).rollout_sampling = rollout_sampling(train_records)
        trainer.save_model()  # the best epoch's weights when a validation split chose them
        for ckpt in model_dir.glob("checkpoint-*"):  # per-epoch copies, only needed to pick the best
            shutil.rmtree(ckpt)
        validation_curve(trainer.state.log_history, model_dir)
        stamp.write_text(json.dumps(cfg.training_key(), indent=2))
    gamma = trainer.gamma
    t_train = time.time() - t0

    # 4. evaluate ----------------------------------------------------------------------------------
    print("[lenvm] 4/5 evaluating on held-out prompts")
    online = trainer.evaluate(eval_dataset=eval_ds)
    critic = LengthCritic(trainer.accelerator.unwrap_model(trainer.model), tokenizer)
    lengths = finished_lengths_by_prompt(eval_records)
    truth = per_prompt_truth(lengths, gamma)
    if not truth:
        raise ValueError(
            f"No held-out prompt has two finished completions (of {cfg.eval_samples} each, cap {cfg.max_new_tokens} "
            "tokens), so there is no ground truth to judge the critic against: raise eval_samples or max_new_tokens."
        )
    prompt_of = {r["prompt_id"]: r["prompt"] for r in eval_records}
    ids = sorted(truth)
    predicted = critic.predict_length([prompt_of[i] for i in ids]).tolist()
    results = {"LenVM": prediction_errors(dict(zip(ids, predicted)), truth)}
    # The baselines' means: finished ones, in answer tokens like the truth (their completion_length counts the EOS).
    train_lengths = [n - 1 for n in completion_lengths(train_ds, include_censored=False)]
    for name, const in train_mean_baselines(train_lengths, gamma).items():
        results[f"baseline: {name} ({const:.0f} tok)"] = prediction_errors({i: const for i in ids}, truth)
    floor = truth_noise_floor(lengths, truth)

    # 5. show --------------------------------------------------------------------------------------
    example = _upper_quartile_example(eval_ds)
    with torch.no_grad():
        v = critic.values(torch.tensor([example["input_ids"]]))[0]
    trained = [i for i, label in enumerate(example["labels"]) if label >= 0]
    png = plot_remaining_length(
        [example["labels"][i] for i in trained],
        value_to_remaining(v[trained], gamma).tolist(),
        out / "remaining_length.png",
        title=f"held-out completion of {example['completion_length']} tokens",
        scatter=([truth[i] for i in ids], predicted),
    )
    report = {
        "gamma": gamma,
        "train": train_stats.summary(),
        "heldout": eval_stats.summary(),
        "length_prediction": results,
        "truth_noise_floor_mre": floor,
        "online_eval": online,
        "validation": _read_validation(model_dir),
        "seconds": {
            "sampling": round(sampling_seconds),
            "training": round(t_train),
            "total": round(sampling_seconds + time.time() - t0),
        },
        "config": asdict(cfg),
    }
    earlier = _earlier_seconds(out) if reused else None
    if earlier:  # a rerun that reused the model: the record keeps what sampling and training cost when they ran
        report["seconds"], report["rerun_seconds"] = earlier, report["seconds"]
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    summary = _summary_markdown(report)
    (out / "summary.md").write_text(summary)
    print("\n" + summary)
    print(
        f"[lenvm] 5/5 done in {report['seconds']['total']} s.\n  model:   {model_dir}\n  plot:    {png}\n"
        f"  summary: {out / 'summary.md'}\n  metrics: {out / 'metrics.json'}"
    )
    return report


def _epoch_selection(on: bool) -> dict:
    """Trainer settings: with a validation split, score it after every epoch and keep the best epoch
    (transformers' ``load_best_model_at_end``); without one, no evaluation or checkpoint during training."""
    if not on:
        return dict(save_strategy="no", eval_strategy="no")
    return dict(
        save_strategy="epoch",
        eval_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_only_model=True,
        save_total_limit=1,
    )


def validation_curve(log_history: list[dict], model_dir: Path) -> dict | None:
    """The validation loss after each epoch and the epoch kept, saved beside the model (a reused model reports it
    too); ``None`` without a validation split."""
    losses = [(round(h["epoch"], 3), h["eval_loss"]) for h in log_history if "eval_loss" in h]
    path = model_dir / "validation.json"
    if not losses:
        path.unlink(missing_ok=True)
        return None
    best = min(losses, key=lambda e: e[1])
    info = {"epoch_losses": [{"epoch": e, "loss": v} for e, v in losses], "best_epoch": best[0], "best_loss": best[1]}
    path.write_text(json.dumps(info, indent=2))
    return info


def _validation_lines(info: dict | None) -> list[str]:
    if not info:
        return []
    curve = ", ".join(f"{e['epoch']:g}: {e['loss']:.4f}" for e in info["epoch_losses"])
    return [f"Validation loss by epoch ({curve}); the model kept is epoch {info['best_epoch']:g}'s."]


def _read_validation(model_dir: Path) -> dict | None:
    path = model_dir / "validation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _upper_quartile_example(dataset) -> dict:
    """The held-out completion at the 75th length percentile: long enough to show the count-down."""
    order = sorted(range(len(dataset)), key=lambda i: dataset[i]["completion_length"])
    return dataset[order[len(order) * 3 // 4]]


def _summary_markdown(report: dict) -> str:
    lines = [
        f"## LenVM quickstart (gamma = {report['gamma']:.4f})",
        "",
        "Length prediction at the prompt boundary on held-out prompts "
        "(ground truth: return-consistent length of the sampled completions):",
        "",
        "| predictor | MRE | MAE (tokens) | Kendall tau | within 50 tok | MRE, longest quartile |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in report["length_prediction"].items():
        tau = "-" if math.isnan(m["kendall_tau"]) else f"{m['kendall_tau']:.2f}"  # undefined for a constant
        lines.append(
            f"| {name} | {100 * m['mre']:.1f} % | {m['mae']:.1f} | {tau} | {100 * m['within_50']:.0f} % | "
            f"{100 * m['mre_longest_quartile']:.1f} % |"
        )
    o = report["online_eval"]
    lines += [
        "",
        f"Noise floor of this ground truth: about {100 * report['truth_noise_floor_mre']:.1f} % MRE (a predictor "
        "that knew each prompt's expected length would still miss a truth averaged from this few samples by as "
        "much; more eval_samples lower it).",
        "",
        "Online relative error of the predicted remaining length, by position in each held-out completion:",
        "",
        "| 0 % | 25 % | 50 % | 75 % | value MSE |",
        "|---|---|---|---|---|",
        f"| {100 * o['eval_online_re_0']:.1f} % | {100 * o['eval_online_re_25']:.1f} % | "
        f"{100 * o['eval_online_re_50']:.1f} % | {100 * o['eval_online_re_75']:.1f} % | "
        f"{o['eval_value_mse']:.4f} |",
        "",
        f"Data: train {report['train']}; held-out {report['heldout']}.",
        *_validation_lines(report.get("validation")),
        f"Time: sampling {report['seconds']['sampling']} s, training {report['seconds']['training']} s, "
        f"total {report['seconds']['total']} s."
        + (
            f" (This rerun reused the model: {report['rerun_seconds']['total']} s.)"
            if "rerun_seconds" in report
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"


def _earlier_seconds(out: Path) -> dict | None:
    """The timing of the run that trained the model in ``out`` (its metrics.json), when there is one."""
    try:
        report = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    seconds = report.get("seconds")
    return seconds if isinstance(seconds, dict) and seconds.get("training") else None


def main(cfg: QuickstartConfig) -> None:
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:  # all cores, unless told to share
        torch.set_num_threads(os.cpu_count() or 1)
    run_quickstart(cfg)
