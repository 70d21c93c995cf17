"""Benchmark: LenVM training tokens/s today against trunk features and padding-free packing, side by side.

Arms (all ``LengthValueTrainer`` on the same examples, in one process, one after another):

* ``today``: the trainer as it is by default (full fine-tuning, padded batches);
* ``L<n>``: ``trunk_layers=n``: the lowest n layers run once, in a no-grad pass, and each epoch trains the layers
  above and the head on their cached output (``L0`` is full fine-tuning again: a control that should read 1.0x;
  ``L30`` on SmolLM2 is a head on the frozen model's final states);
* ``packed``: ``padding_free=True`` (rows packed to ``max_length``); ``L<n>+packed`` both.

Examples are random token ids with the length spread of sampled answers (prompt 16-48 tokens, completion
log-uniform from 4 tokens to the cap, ending in EOS). Per arm: ``train()`` wall time for ``--epochs`` epochs,
trunk pass included (``end_to_end`` tokens/s: real tokens x epochs / that time), and the optimizer steps alone
(``steps`` tokens/s), with the ratio of each to ``today``. ``--repeats`` runs the arms again in reverse order
and reports medians.

    python -m evals.benchmarks.trunk_training                  # the embedded SmolLM2-135M (minutes per arm)
    python -m evals.benchmarks.trunk_training --tiny           # seconds: random tiny Llama
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Literal

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.trunk_training"
DEFAULT_OUTPUT = "evals/results/bench_trunk_training.json"
GAMMA = 0.99
ARM = re.compile(r"^(today|packed|L(\d+)(\+packed)?)$")
DEFAULT_ARMS = ["today", "L0", "L15", "L24", "L30", "packed", "L24+packed"]
TINY_ARMS = ["today", "L0", "L1", "L2", "packed", "L1+packed"]


@dataclass
class TrunkBenchOptions:
    """Training tokens/s of LengthValueTrainer: today's full fine-tuning against trunk features (trunk_layers) and
    padding-free packing, on the same synthetic examples, ratios to today."""

    tiny: bool = option("Smoke mode: random tiny Llama (2 layers), 16 short examples, 1 epoch.", False)
    arms: list[str] = field(
        default_factory=list,
        metadata={"help": f"Arms: today, packed, L<n>, L<n>+packed (default {' '.join(DEFAULT_ARMS)})."},
    )
    examples: int | None = option("Training examples (default 96).")
    epochs: float | None = option("Epochs per arm (default 3: the quickstart's).")
    batch_size: int = option("Sequences per optimizer step.", 8)
    max_length: int | None = option("Longest prompt + completion, and the packed row size (default 512).")
    dtype: Literal["auto", "bf16", "fp32"] = option("bf16 autocast, fp32, or auto (bf16 where native).", "auto")
    trunk_cache_dtype: str = option("Storage dtype of the trunk features.", "bfloat16")
    threads: int | None = option("torch threads (default: 2 on CPU).")
    repeats: int = option("Runs of every arm (the order reverses each time); medians reported.", 1)
    seed: int = option("Seed of the examples and the head.", 0)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)
    quiet: bool = option("No progress lines.", False)

    def __post_init__(self):
        self.arms = self.arms or (TINY_ARMS if self.tiny else DEFAULT_ARMS)
        bad = [a for a in self.arms if not ARM.match(a)]
        if bad:
            raise SystemExit(f"unknown arms {bad}: use today, packed, L<n>, L<n>+packed")
        self.examples = self.examples or (16 if self.tiny else 96)
        self.epochs = self.epochs or (1.0 if self.tiny else 3.0)
        self.max_length = self.max_length or (64 if self.tiny else 512)


def arm_settings(arm: str) -> dict:
    """LengthValueConfig fields of an arm."""
    m = ARM.match(arm)
    return {
        "trunk_layers": int(m.group(2)) if m.group(2) else None,
        "padding_free": arm == "packed" or bool(m.group(3)),
    }


def load_base(tiny: bool):
    """(model, name): the embedded default or a random tiny Llama, fp32 weights."""
    import torch
    from transformers import AutoModel

    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.modeling import LengthValueModel

    if tiny:
        config = harness.config_from_dict(harness.SHAPES["tiny-llama"])
        return LengthValueModel(AutoModel.from_config(config), gamma=GAMMA), "tiny-llama (random)"
    return LengthValueModel.from_backbone(resolve_model(None), gamma=GAMMA, dtype=torch.float32), "SmolLM2-135M"


def synthetic_dataset(n: int, max_length: int, vocab: int, eos: int, seed: int):
    """Random ids with a sampled answer's length spread; built like real examples (lenvm_rl.data.build_example)."""
    import random

    from datasets import Dataset

    from lenvm_rl.data import build_example

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(16, min(48, max_length // 2)))]
        cap = max_length - len(prompt)
        length = max(1, min(cap, round(math.exp(rng.uniform(math.log(4), math.log(cap))))))
        completion = [rng.randrange(3, vocab) for _ in range(length - 1)] + [eos]
        rows.append(build_example(prompt, completion, max_length=max_length))
    return Dataset.from_list(rows)


def run_arm(arm: str, base, dataset, o: TrunkBenchOptions, bf16: bool) -> dict:
    import torch
    from transformers import TrainerCallback

    from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

    steps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            steps.append(time.perf_counter() - self.t)

    torch.manual_seed(o.seed)
    model = copy.deepcopy(base)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    with tempfile.TemporaryDirectory(prefix="bench_trunk_") as out:
        args = LengthValueConfig(
            output_dir=out,
            gamma=GAMMA,
            max_length=o.max_length,
            num_train_epochs=o.epochs,
            per_device_train_batch_size=o.batch_size,
            per_device_eval_batch_size=o.batch_size,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),
            save_strategy="no",
            report_to=[],
            logging_steps=1,
            disable_tqdm=True,
            seed=o.seed,
            trunk_cache_dtype=o.trunk_cache_dtype,
            **arm_settings(arm),
        )
        trainer = LengthValueTrainer(
            model, args, train_dataset=dataset, data_collator=None, processing_class=_PadOnly(pad)
        )
        trainer.add_callback(StepTimer())
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
    tokens = sum(len(x) for x in dataset["input_ids"]) * o.epochs
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "arm": arm,
        **arm_settings(arm),
        "train_s": total,
        "trunk_s": trainer.trunk_seconds or 0.0,
        "steps_s": sum(steps),
        "steps": len(steps),
        "end_to_end_tokens_per_s": tokens / total,
        "steps_tokens_per_s": tokens / sum(steps),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "final_loss": losses[-1] if losses else None,
    }


class _PadOnly:
    """What the trainer reads from a tokenizer to pad (the synthetic examples need no real one)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = self.eos_token_id = pad_token_id

    def save_pretrained(self, *a, **k):
        pass


def summarize(runs: list[dict], arms: list[str]) -> dict:
    per_arm = {}
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        per_arm[arm] = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], float)}
        per_arm[arm]["trainable_params"] = rs[0]["trainable_params"]
    if "today" in per_arm:
        today = per_arm["today"]
        for a in per_arm.values():
            a["end_to_end_vs_today"] = a["end_to_end_tokens_per_s"] / today["end_to_end_tokens_per_s"]
            a["steps_vs_today"] = a["steps_tokens_per_s"] / today["steps_tokens_per_s"]
    return per_arm


def markdown(result: dict) -> str:
    cfg, s = result["config"], result["summary"]
    lines = harness.markdown_head(result, cfg["threads"]) + [
        f"Model: {cfg['model']}; {cfg['examples']} examples ({cfg['tokens_per_epoch']} tokens, padded batches "
        f"{100 * cfg['padding_share']:.0f} % padding), {cfg['epochs']:g} epochs, batch {cfg['batch_size']}, "
        f"max_length {cfg['max_length']}, {cfg['dtype']}, trunk cache {cfg['trunk_cache_dtype']}; "
        f"{cfg['repeats']} run(s) per arm, medians",
        "",
    ]
    rows = [
        [
            arm,
            f"{a['end_to_end_tokens_per_s']:.0f}",
            f"**{a.get('end_to_end_vs_today', float('nan')):.2f}x**",
            f"{a['steps_tokens_per_s']:.0f}",
            f"{a.get('steps_vs_today', float('nan')):.2f}x",
            f"{a['trunk_s']:.1f}",
            f"{a['train_s']:.1f}",
            f"{a['trainable_params'] / 1e6:.1f}",
        ]
        for arm, a in s.items()
    ]
    cols = ["arm", "tokens/s", "vs today", "step tokens/s", "vs today", "trunk pass (s)", "train() (s)", "trained M"]
    return "\n".join(lines + harness.markdown_table(cols, rows))


def main(argv: list[str] | None = None) -> dict:
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    o = harness.parse_options(TrunkBenchOptions, argv, f"python -m {MODULE}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = o.threads or (2 if device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    from lenvm_rl.defaults import native_bf16

    bf16 = o.dtype == "bf16" or (o.dtype == "auto" and native_bf16())
    base, name = load_base(o.tiny)
    eos = base.config.eos_token_id if isinstance(base.config.eos_token_id, int) else 2
    dataset = synthetic_dataset(o.examples, o.max_length, base.config.vocab_size, eos, o.seed)
    lengths = [len(x) for x in dataset["input_ids"]]
    padded = sum(
        max(lengths[i : i + o.batch_size]) * len(lengths[i : i + o.batch_size])
        for i in range(0, len(lengths), o.batch_size)
    )
    runs = []
    for r in range(o.repeats):
        for arm in o.arms if r % 2 == 0 else o.arms[::-1]:
            harness.log(o.quiet, f"== {arm} (run {r + 1}/{o.repeats})")
            runs.append(run_arm(arm, base, dataset, o, bf16) | {"repeat": r})
            harness.log(o.quiet, f"   {runs[-1]['end_to_end_tokens_per_s']:.0f} tokens/s end to end")
    config = {
        "model": name,
        "arms": o.arms,
        "examples": o.examples,
        "tokens_per_epoch": sum(lengths),
        "padding_share": 1 - sum(lengths) / padded,  # of in-order batches; shuffled ones pad alike on average
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        "max_length": o.max_length,
        "dtype": "bf16" if bf16 else "fp32",
        "trunk_cache_dtype": o.trunk_cache_dtype,
        "threads": threads,
        "repeats": o.repeats,
        "seed": o.seed,
    }
    result = {
        "benchmark": "trunk_training",
        "command": harness.command_line(MODULE, argv),
        "machine": harness.machine_info(device) | {"native_bf16": native_bf16()},
        "config": config,
        "summary": summarize(runs, o.arms),
        "runs": runs,
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


if __name__ == "__main__":
    main()
