"""Benchmark: LenVM value training against SFT of the same backbone, on identical batches (docs/method.md).

Two arms, measured side by side in one run:

* ``lenvm``: ``LengthValueModel.from_backbone(...)`` trained by ``LengthValueTrainer`` (token-mean value MSE,
  no vocabulary projection); labels are remaining-token counts built by :func:`lenvm_rl.data.build_example`.
* ``sft``: ``AutoModelForCausalLM`` of the same backbone trained by a plain ``transformers.Trainer`` with the
  causal-LM loss; labels are the token ids at the completion positions, -100 on the prompt.

Both arms see exactly the same token ids (random ids of a fixed length, seeded), in the same order, with the
same optimizer, precision, thread count and Trainer settings (checked: a fingerprint of every batch is
recorded). Each arm runs in its own fresh subprocess, so peak memory is not polluted by the other arm. By
default the two subprocesses run in lockstep: both load their model, then they take turns one optimizer step
at a time (A B, B A, A B, ...; only one computes at any moment), so other jobs on a shared machine and clock
drift hit both arms alike. ``--schedule sequential`` runs one subprocess after another instead (A B B A ...;
needs memory for one model only). Per-arm figures are medians over ``--repeats``; the share of the CPU taken
by other processes during each step is recorded and a busy machine is flagged.

Definitions:

* throughput: tokens processed (batch x seq_len, every token of the batch) per second of optimizer steps
  (forward + backward + clipping + optimizer step + zero_grad, timed by a ``TrainerCallback`` between
  ``on_step_begin`` and ``on_step_end``), summed over the measured steps; the first ``--warmup`` steps are not
  counted.
* memory: see ``harness.MemoryProbe`` (the peak after loading minus the memory right after loading: gradients,
  optimizer state, activations, logits; and the total peak).
* ratios: LenVM / SFT for throughput (goal >= 1.0, stretch 1.2) and for peak memory increase (goal <= 1.0).

Run ``python -m evals.benchmarks.train_throughput`` from the repository root (``make bench``); ``--help``
lists the options; ``--tiny`` is a seconds-long smoke run on a random tiny Llama.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.train_throughput"
ARMS = ("lenvm", "sft", "lenvm_frozen")
ARM_LABELS = {"lenvm": "LenVM (value head)", "sft": "SFT (causal LM)", "lenvm_frozen": "LenVM, lower layers frozen"}
LENVM_ARMS = ("lenvm", "lenvm_frozen")
DEFAULT_OUTPUT = "evals/results/bench_train.json"
GAMMA = 0.997  # any valid gamma; the targets' values do not change the cost
TINY = dict(shape="tiny-llama", batch_size=4, seq_len=32, steps=2, warmup=1, repeats=1, freeze_layers=1)
DEFAULTS = dict(batch_size=8, seq_len=256, steps=4, warmup=2, repeats=2, freeze_layers=20)


@dataclass
class TrainBenchOptions:
    """LenVM value training vs. SFT of the same backbone on identical synthetic batches: tokens/s and peak memory
    per arm, and the LenVM/SFT ratios. The model is one of ``model``, ``random_init``, ``shape``."""

    model: str | None = option("Backbone (hub id or local path); default: the embedded SmolLM2-135M-Instruct.")
    random_init: str | None = option("Randomly initialised model of this config (hub id, local dir or config.json).")
    shape: str | None = option(
        "Randomly initialised model of a built-in shape, e.g. qwen2.5-1.5b (fp32 AdamW needs "
        "~16 bytes per parameter: 1.5B ~24 GB).",
        choices=sorted(harness.SHAPES),
    )
    tiny: bool = option(
        "Smoke mode: random tiny Llama, batch 4 x seq 32, 1 warm-up + 2 measured steps, 1 repeat.", False
    )
    batch_size: int | None = option("Sequences per optimizer step (default 8).")
    seq_len: int | None = option("Tokens per sequence (default 256).")
    prompt_len: int | None = option("Prompt tokens per sequence (default seq_len // 4); the completion ends in EOS.")
    steps: int | None = option("Measured optimizer steps per arm and run (default 4).")
    warmup: int | None = option("Warm-up optimizer steps, not counted (default 2).")
    repeats: int | None = option("Runs per arm; which arm goes first alternates; medians reported (default 2).")
    dtype: Literal["bf16", "fp32"] = option(
        "bf16: autocast over fp32 master weights (Trainer's bf16); fp32: plain.", "bf16"
    )
    threads: int | None = option("torch threads per arm (default 2 on CPU).")
    device: Literal["auto", "cpu", "cuda"] = option("Where to train.", "auto")
    arms: list[str] = field(
        default_factory=lambda: ["lenvm", "sft"],
        metadata={"help": "Arms to run (default lenvm sft; lenvm_frozen: LengthValueConfig.freeze_layers)."},
    )
    freeze_layers: int | None = option("Layers the lenvm_frozen arm freezes (default 20 of SmolLM2's 30).")
    schedule: Literal["lockstep", "sequential"] = option(
        "lockstep: the arms live in fresh subprocesses at once and take turns step by step, so other jobs' load "
        "hits them alike (memory for both models); sequential: one subprocess after another (A B B A ...).",
        "lockstep",
    )
    in_process: bool = option(
        "Run the arms one after another in this process (faster to start; CPU peak memory "
        "less fair; implies schedule sequential).",
        False,
    )
    wait_idle: float = option(
        "Before each run, wait up to this many seconds for an idle machine (others under 5%% "
        "of the CPU for 10 s). Default 0: no wait.",
        0.0,
    )
    lr: float = option("Learning rate of both arms (constant schedule).", 1e-5)
    seed: int = option("Seed of the token ids and of random initialisation.", 0)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)
    quiet: bool = option("No per-step progress lines.", False)

    def __post_init__(self):
        if sum(x is not None for x in (self.model, self.random_init, self.shape)) > 1:
            raise SystemExit("give at most one of --model, --random_init, --shape")
        if self.tiny and self.model is None and self.random_init is None and self.shape is None:
            self.shape = TINY["shape"]
        for k, v in DEFAULTS.items():
            if getattr(self, k) is None:
                setattr(self, k, TINY[k] if self.tiny else v)
        if self.prompt_len is None:
            self.prompt_len = max(1, self.seq_len // 4)
        if not 1 <= self.prompt_len < self.seq_len:
            raise SystemExit(f"--prompt_len must be in [1, seq_len - 1], got {self.prompt_len} for {self.seq_len}")
        if self.steps < 1 or self.warmup < 0 or self.repeats < 1 or self.batch_size < 1:
            raise SystemExit("--steps, --repeats and --batch_size must be >= 1 and --warmup >= 0")
        if not self.arms or any(a not in ARMS for a in self.arms):
            raise SystemExit(f"--arms takes a subset of {ARMS}, got {self.arms}")
        if self.device == "auto":
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.threads is None and self.device == "cpu":
            self.threads = 2
        if self.in_process:
            self.schedule = "sequential"


# ---------------------------------------------------------------------------------------------- model + data
def model_source(spec: dict) -> dict:
    """What to build: ``{"kind": "pretrained", "path": ...}`` or ``{"kind": "random", "config": {...}}``."""
    if spec.get("shape"):
        return {"kind": "random", "name": spec["shape"], "config": dict(harness.SHAPES[spec["shape"]])}
    if spec.get("random_init"):
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(spec["random_init"]).to_dict()
        for k in ("quantization_config", "_name_or_path", "transformers_version"):
            cfg.pop(k, None)
        return {"kind": "random", "name": spec["random_init"], "config": cfg}
    from lenvm_rl.defaults import resolve_model

    return {
        "kind": "pretrained",
        "name": spec.get("model") or "smollm2-135m-instruct (embedded default)",
        "path": resolve_model(spec.get("model")),
    }


def load_arm_model(arm: str, source: dict, seed: int):
    """The model of one arm, fp32 master weights (bf16 runs use autocast, as Trainer's bf16 does)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from lenvm_rl.modeling import LengthValueModel

    torch.manual_seed(seed)
    if source["kind"] == "pretrained":
        if arm in LENVM_ARMS:
            return LengthValueModel.from_backbone(source["path"], gamma=GAMMA, dtype=torch.float32)
        return AutoModelForCausalLM.from_pretrained(source["path"], dtype=torch.float32)
    config = harness.config_from_dict(source["config"])
    if arm in LENVM_ARMS:
        return LengthValueModel.from_backbone(AutoModel.from_config(config, dtype=torch.float32), gamma=GAMMA)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def synthetic_sequences(n: int, seq_len: int, prompt_len: int, vocab_size: int, eos_id: int, seed: int):
    """``n`` (prompt_ids, completion_ids) pairs of random ids; every completion ends with EOS (a finished one)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (n, seq_len), generator=g)
    ids[ids == eos_id] = (eos_id + 1) % vocab_size  # EOS only at the end
    ids[:, -1] = eos_id
    return [(row[:prompt_len].tolist(), row[prompt_len:].tolist()) for row in ids]


def build_features(arm: str, sequences) -> list[dict]:
    """LenVM: remaining-token counts as in lenvm_rl.data.build_example; SFT: LM labels, -100 on the prompt."""
    from lenvm_rl.data import IGNORE_INDEX, build_example

    feats = []
    for prompt, completion in sequences:
        if arm in LENVM_ARMS:
            ex = build_example(prompt, completion, max_length=None)
            feats.append({"input_ids": ex["input_ids"], "labels": ex["labels"]})
        else:
            feats.append({"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + list(completion)})
    return feats


def fingerprint(batch: dict) -> str:
    h = hashlib.sha1()
    for key in ("input_ids", "attention_mask"):
        t = batch[key]
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- one arm
def run_arm(spec: dict) -> dict:
    """Train one arm for warmup + steps optimizer steps and measure it (runs in a fresh process by default)."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from lenvm_rl.data import LengthValueCollator
    from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

    arm, cuda, warmup = spec["arm"], spec["device"] == "cuda", spec["warmup"]
    turns = harness.TurnTaker() if spec.get("lockstep") else None
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    memory = harness.MemoryProbe(cuda)
    t0 = time.perf_counter()
    model = load_arm_model(arm, spec["source"], spec["seed"])
    if cuda:
        model.to("cuda")
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    memory.loaded()
    config = model.config
    eos = config.eos_token_id if config.eos_token_id is not None else 0
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else eos

    total_steps, tokens_per_step = warmup + spec["steps"], spec["batch_size"] * spec["seq_len"]
    sequences = synthetic_sequences(
        total_steps * spec["batch_size"], spec["seq_len"], spec["prompt_len"], config.vocab_size, eos, spec["seed"]
    )
    features = build_features(arm, sequences)
    # Positions that enter the loss: LenVM the last prompt token through EOS (L + 1 per row); SFT the L
    # completion tokens (the causal-LM loss shifts labels, so position t predicts token t + 1).
    trained_tokens_per_step = sum(sum(1 for x in f["labels"] if x != -100) for f in features) / total_steps
    fingerprints, step_times, foreign, losses = [], [], [], []
    collator = LengthValueCollator(pad_token_id=pad)

    def collate(batch):
        out = collator(batch)
        fingerprints.append(fingerprint(out))
        return out

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if turns is not None:
                turns.wait_turn()  # idle until the other arm has finished its step (and its logging)
            harness.sync(spec["device"])
            self._cpu, self._t = harness.cpu_snapshot(), time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            harness.sync(spec["device"])
            step_times.append(time.perf_counter() - self._t)
            foreign.append(harness.foreign_cpu_share(self._cpu, harness.cpu_snapshot()))
            i, dt = len(step_times), step_times[-1]
            other = "" if foreign[-1] is None else f", other processes {100 * foreign[-1]:.0f}% CPU"
            harness.log(
                spec.get("quiet", False),
                f"[{spec['tag']}] step {i}/{total_steps} "
                f"({'warm-up' if i <= warmup else 'measured'}): {dt:.2f} s, {tokens_per_step / dt:.0f} tok/s"
                f"{other}",
            )

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory(prefix=f"bench_train_{arm}_") as out_dir:
        common = dict(
            output_dir=out_dir,
            per_device_train_batch_size=spec["batch_size"],
            gradient_accumulation_steps=1,
            max_steps=total_steps,
            learning_rate=spec["lr"],
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            bf16=spec["dtype"] == "bf16",
            use_cpu=not cuda,
            train_sampling_strategy="sequential",
            dataloader_num_workers=0,
            dataloader_pin_memory=cuda,
            remove_unused_columns=False,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            logging_steps=1,
            disable_tqdm=True,
            seed=spec["seed"],
        )
        if arm in LENVM_ARMS:
            frozen = spec["freeze_layers"] if arm == "lenvm_frozen" else 0
            targs = LengthValueConfig(
                gamma=GAMMA, max_length=spec["seq_len"], overwrite_output_dir=True, freeze_layers=frozen, **common
            )
            trainer_class = LengthValueTrainer
        else:
            targs, trainer_class = TrainingArguments(**common), Trainer
        trainer = trainer_class(
            model=model, args=targs, train_dataset=features, data_collator=collate, callbacks=[StepTimer()]
        )
        trainer.remove_callback(PrinterCallback)  # per-step log dicts; StepTimer prints its own line
        trainer.train()
        if turns is not None:
            turns.wait_turn()  # hold still until the other arm's last step is done

    measured, measured_foreign = step_times[warmup:], [x for x in foreign[warmup:] if x is not None]
    return {
        "arm": arm,
        "tag": spec["tag"],
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "load_s": load_s,
        "step_times_s": step_times,
        "measured_steps": len(measured),
        "tokens_per_step": tokens_per_step,
        "trained_tokens_per_step": trained_tokens_per_step,
        "tokens_per_s": tokens_per_step * len(measured) / sum(measured),
        "trained_tokens_per_s": trained_tokens_per_step * len(measured) / sum(measured),
        "median_step_s": statistics.median(measured),
        "foreign_cpu_share": foreign,  # per step: other processes' share of the machine's CPU (None if unknown)
        "foreign_cpu_share_measured": statistics.mean(measured_foreign) if measured_foreign else None,
        "losses": losses,
        "batch_fingerprints": fingerprints,
        "memory": memory.report(),
        "optim": str(getattr(targs.optim, "value", targs.optim)),
    }


# ---------------------------------------------------------------------------------------------------- summary
def arm_order(arms: list[str], repeat: int) -> list[str]:
    """Which arm goes first alternates between repeats (A B, B A, A B, ...): order effects cancel in the medians."""
    return list(arms) if repeat % 2 == 0 else list(arms)[::-1]


def summarize(runs: list[dict], arms: list[str]) -> dict:
    med = statistics.median
    per_arm = {}
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        shares = [r["foreign_cpu_share_measured"] for r in rs if r.get("foreign_cpu_share_measured") is not None]
        per_arm[arm] = {
            "runs": len(rs),
            "tokens_per_s": med(r["tokens_per_s"] for r in rs),
            "tokens_per_s_all": [r["tokens_per_s"] for r in rs],
            "trained_tokens_per_s": med(r["trained_tokens_per_s"] for r in rs),
            "median_step_s": med(r["median_step_s"] for r in rs),
            "peak_increase_mib": med(harness.peak_increase_mib(r["memory"]) for r in rs),
            "peak_increase_mib_all": [harness.peak_increase_mib(r["memory"]) for r in rs],
            "peak_total_mib": med(harness.peak_total_mib(r["memory"]) for r in rs),
            "after_load_mib": med(
                r["memory"].get("cuda_after_load_mib") or r["memory"]["rss_after_load_mib"] for r in rs
            ),
            "n_params": rs[0]["n_params"],
            "n_trainable": rs[0]["n_trainable"],
            "final_loss": rs[0]["losses"][-1] if rs[0]["losses"] else None,
            "memory_method": rs[0]["memory"]["method"],
            "foreign_cpu_share": statistics.mean(shares) if shares else None,
        }
    out = {"arms": per_arm}
    if "lenvm" in per_arm and "sft" in per_arm:
        a, b = per_arm["lenvm"], per_arm["sft"]
        tp = a["tokens_per_s"] / b["tokens_per_s"]
        mem = a["peak_increase_mib"] / b["peak_increase_mib"] if b["peak_increase_mib"] else float("nan")
        tot = a["peak_total_mib"] / b["peak_total_mib"] if b["peak_total_mib"] else float("nan")
        out["ratios"] = {
            "throughput_lenvm_over_sft": tp,
            "peak_increase_lenvm_over_sft": mem,
            "peak_total_lenvm_over_sft": tot,
            "paired_step_throughput_lenvm_over_sft": paired_step_ratio(runs),
        }
        out["goals"] = {
            "throughput_ge_1.0": tp >= 1.0,
            "throughput_ge_1.2_stretch": tp >= 1.2,
            "memory_le_1.0": mem <= 1.0,
        }
    if "lenvm" in per_arm and "lenvm_frozen" in per_arm:
        out.setdefault("ratios", {})["throughput_frozen_over_lenvm"] = (
            per_arm["lenvm_frozen"]["tokens_per_s"] / per_arm["lenvm"]["tokens_per_s"]
        )
    out["identical_batches"] = len({tuple(r["batch_fingerprints"]) for r in runs}) == 1
    return out


def paired_step_ratio(runs: list[dict]) -> float | None:
    """Median over (repeat, measured step) of SFT step time / LenVM step time: robust to drift between steps."""
    sft = {r.get("repeat", 0): r for r in runs if r["arm"] == "sft"}
    ratios = []
    for a in (r for r in runs if r["arm"] == "lenvm" and r.get("repeat", 0) in sft):
        b, warm = sft[a.get("repeat", 0)], len(a["step_times_s"]) - a["measured_steps"]
        ratios += [tb / ta for ta, tb in zip(a["step_times_s"][warm:], b["step_times_s"][warm:]) if ta > 0]
    return statistics.median(ratios) if ratios else None


def markdown(result: dict) -> str:
    m, s, cfg = result["machine"], result["summary"], result["config"]
    mem = "alloc." if m["device"] == "cuda" else "RSS"
    first = cfg["arms"][0]
    lines = harness.markdown_head(result, cfg["threads"]) + [
        f"Model: {cfg['model_name']} ({s['arms'][first]['n_params'] / 1e6:.1f} M params in the {first} arm); batch "
        f"{cfg['batch_size']} x seq {cfg['seq_len']} (prompt {cfg['prompt_len']}), {cfg['dtype']}, {cfg['warmup']} "
        f"warm-up + {cfg['steps']} measured steps, {cfg['repeats']} run(s) per arm "
        f"({'in one process' if cfg['in_process'] else 'each in a fresh subprocess'}; schedule {cfg['schedule']}, "
        f"order {' '.join(cfg['order'])}); medians; identical batches: {s.get('identical_batches', 'n/a')}",
        "",
    ]
    rows = [
        [
            ARM_LABELS[arm],
            f"{a['tokens_per_s']:.0f}",
            f"{a['median_step_s']:.3g}",
            f"{a['peak_increase_mib']:.0f}",
            f"{a['peak_total_mib']:.0f}",
        ]
        for arm, a in s["arms"].items()
    ]
    if "throughput_lenvm_over_sft" in s.get("ratios", {}):
        r, step = s["ratios"], s["arms"]["lenvm"]["median_step_s"] / s["arms"]["sft"]["median_step_s"]
        rows.append(
            [
                "**LenVM / SFT**",
                f"**{r['throughput_lenvm_over_sft']:.2f}x**",
                f"{step:.2f}x",
                f"**{r['peak_increase_lenvm_over_sft']:.2f}x**",
                f"{r['peak_total_lenvm_over_sft']:.2f}x",
            ]
        )
    if "throughput_frozen_over_lenvm" in s.get("ratios", {}):
        a, b = s["arms"]["lenvm_frozen"], s["arms"]["lenvm"]
        rows.append(
            [
                f"**frozen {cfg['freeze_layers']} / LenVM**",
                f"**{s['ratios']['throughput_frozen_over_lenvm']:.2f}x**",
                f"{a['median_step_s'] / b['median_step_s']:.2f}x",
                f"{a['peak_increase_mib'] / b['peak_increase_mib']:.2f}x" if b["peak_increase_mib"] else "n/a",
                f"{a['peak_total_mib'] / b['peak_total_mib']:.2f}x",
            ]
        )
    lines += harness.markdown_table(
        ["arm", "tokens/s", "step (s)", f"peak {mem} increase (MiB)", f"peak {mem} total (MiB)"], rows
    )
    paired = s.get("ratios", {}).get("paired_step_throughput_lenvm_over_sft")
    if paired is not None:
        lines += [
            "",
            f"Median of paired step-time ratios (SFT step / LenVM step, same repeat and step): {paired:.2f}x.",
        ]
    shares = {arm: a["foreign_cpu_share"] for arm, a in s["arms"].items() if a["foreign_cpu_share"] is not None}
    if m["device"] != "cuda" and shares:
        txt = ", ".join(f"{arm} {100 * v:.0f}%" for arm, v in shares.items())
        lines += ["", f"Other processes' share of the machine's CPU during the measured steps (mean): {txt}."]
        lines += harness.busy_warning(shares.values(), 0.1, "--repeats")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result dict (also written to ``--output``) and prints a markdown table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [harness.CHILD_FLAG]:  # one arm, in the fresh process that run_child / run_lockstep started
        harness.child_main(argv[1], run_arm)
        return {}
    o = harness.parse_options(TrainBenchOptions, argv, f"python -m {MODULE}")
    base = {
        k: getattr(o, k)
        for k in (
            "model",
            "random_init",
            "shape",
            "batch_size",
            "seq_len",
            "prompt_len",
            "steps",
            "warmup",
            "dtype",
            "threads",
            "device",
            "lr",
            "seed",
            "freeze_layers",
        )
    }
    source = model_source(base)  # converts the embedded default once, here, not inside a timed child
    lockstep, script = o.schedule == "lockstep" and len(o.arms) > 1, Path(__file__)
    if o.in_process and o.threads:
        import torch

        torch.set_num_threads(o.threads)

    runs, order = [], []
    for r in range(o.repeats):
        arms = arm_order(o.arms, r)
        specs = [
            {**base, "source": source, "quiet": o.quiet, "arm": arm, "tag": f"{arm} run {r + 1}/{o.repeats}"}
            for arm in arms
        ]
        if lockstep:
            order.append("+".join(arms))
            idle = harness.wait_for_idle(o.wait_idle, f"run {r + 1}", o.quiet)
            harness.log(
                o.quiet, f"== run {r + 1}/{o.repeats}: {' and '.join(arms)} in lockstep, each in a fresh subprocess"
            )
            done = [(res, idle) for res in harness.run_lockstep(script, specs, o.warmup + o.steps)]
        else:
            order += arms
            done = []
            for spec in specs:
                idle = harness.wait_for_idle(o.wait_idle, spec["tag"], o.quiet)
                harness.log(o.quiet, f"== {spec['tag']} ({'in process' if o.in_process else 'fresh subprocess'})")
                done.append((run_arm(spec) if o.in_process else harness.run_child(script, spec), idle))
        for res, idle in done:
            res["repeat"], res["wait_idle"] = r, idle
            runs.append(res)

    config = {
        **base,
        "wait_idle_s": o.wait_idle,
        "model_name": source["name"],
        "model_kind": source["kind"],
        "repeats": o.repeats,
        "arms": o.arms,
        "order": order,
        "in_process": o.in_process,
        "schedule": "lockstep" if lockstep else "sequential",
        "optim": runs[0]["optim"],
        "tokens_per_step": o.batch_size * o.seq_len,
    }
    if source["kind"] == "random":
        config["model_config"] = source["config"]
    result = {
        "benchmark": "lenvm_train_vs_sft",
        "command": harness.command_line(MODULE, argv),
        "machine": harness.machine_info(o.device),
        "config": config,
        "summary": summarize(runs, o.arms),
        "runs": runs,
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


if __name__ == "__main__":
    main()
