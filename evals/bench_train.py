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
* memory on CPU: the peak resident set size (``VmHWM``, reset after the model is loaded) minus the RSS right
  after the model is loaded (the training overhead: gradients, optimizer state, activations, logits), and the
  total peak RSS. On CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation after the model is moved to
  the GPU, and the total peak allocation.
* ratios: LenVM / SFT for throughput (goal >= 1.0, stretch 1.2) and for peak memory increase (goal <= 1.0).

Run ``python -m evals.bench_train`` from the repository root (or ``python evals/bench_train.py``); ``--help``
lists the options; ``--tiny`` is a seconds-long smoke run on a random tiny Llama.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so `python evals/bench_train.py` finds lenvm_rl and evals
    sys.path.insert(0, str(REPO_ROOT))

ARMS = ("lenvm", "sft")
ARM_LABELS = {"lenvm": "LenVM (value head)", "sft": "SFT (causal LM)"}
DEFAULT_OUTPUT = "evals/results/bench_train.json"
GAMMA = 0.997  # any valid gamma; the targets' values do not change the cost

# Real model shapes with random weights, written inline so no hub access is needed.
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
                       tie_word_embeddings=False, max_position_embeddings=32768, rms_norm_eps=1e-6,
                       rope_theta=1000000.0, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643),
    # --tiny: a random tiny Llama, seconds per run.
    "tiny-llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=128, vocab_size=512, tie_word_embeddings=True,
                       max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2),
}
TINY_DEFAULTS = dict(shape="tiny-llama", batch_size=4, seq_len=32, steps=2, warmup=1, repeats=1)


# ----------------------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evals.bench_train",
        description="LenVM value training vs. SFT of the same backbone on identical synthetic batches: "
                    "tokens/s and peak memory per arm, and the LenVM/SFT ratios.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="Backbone to load (hub id or local path); default: the embedded default model "
                          "(lenvm_rl.defaults.resolve_model(None), SmolLM2-135M-Instruct).")
    src.add_argument("--random-init", metavar="CONFIG_NAME_OR_PATH", default=None,
                     help="Build a randomly initialised model from this config (hub id, local dir or config.json).")
    src.add_argument("--shape", choices=sorted(SHAPES), default=None,
                     help="Randomly initialised model of a built-in shape, e.g. qwen2.5-1.5b (hidden 1536, 28 layers, "
                          "12 heads, 2 kv heads, intermediate 8960, vocab 151936). Note: full fp32 AdamW training "
                          "needs ~16 bytes per parameter (1.5B: ~24 GB).")
    p.add_argument("--tiny", action="store_true",
                   help="Smoke mode: random tiny Llama, batch 4 x seq 32, 1 warm-up + 2 measured steps, 1 repeat "
                        "(explicit options still override).")
    p.add_argument("--batch-size", type=int, default=None, help="Sequences per optimizer step (default 8).")
    p.add_argument("--seq-len", type=int, default=None, help="Tokens per sequence (default 256).")
    p.add_argument("--prompt-len", type=int, default=None,
                   help="Prompt tokens per sequence (default seq_len // 4); the rest is the completion, ending in EOS.")
    p.add_argument("--steps", type=int, default=None, help="Measured optimizer steps per arm and run (default 4).")
    p.add_argument("--warmup", type=int, default=None, help="Warm-up optimizer steps not counted (default 2).")
    p.add_argument("--repeats", type=int, default=None,
                   help="Runs per arm (lockstep: which arm goes first alternates; sequential: A B B A ...); medians are "
                        "reported (default 2).")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                   help="bf16: bf16 autocast over fp32 master weights (Trainer's --bf16); fp32: plain fp32.")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads in each arm (default 2 on CPU, torch's default on CUDA).")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="Where to train.")
    p.add_argument("--arms", default=",".join(ARMS), help="Comma-separated arms to run (default lenvm,sft).")
    p.add_argument("--schedule", choices=("lockstep", "sequential"), default="lockstep",
                   help="lockstep (default): both arms live in their own fresh subprocess at the same time and take "
                        "turns step by step (A B, B A, ...), only one computing at a time, so load from other jobs "
                        "hits both arms alike; needs memory for both models at once. sequential: one subprocess per "
                        "arm run after another (A B B A ...).")
    p.add_argument("--in-process", action="store_true",
                   help="Run the arms one after another in this process instead of fresh subprocesses (faster to "
                        "start; CPU peak-memory figures are then less fair; implies --schedule sequential).")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="Before each repeat, wait up to this long for the machine to be idle (other processes under "
                        "5%% of the CPU for 10 s); useful on a shared CPU machine. Default 0: do not wait.")
    p.add_argument("--lr", type=float, default=1e-5, help="Learning rate of both arms (constant schedule).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the token ids and of random initialisation.")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"JSON result path (default {DEFAULT_OUTPUT}).")
    p.add_argument("--quiet", action="store_true", help="No per-step progress lines.")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)  # internal: run one arm from a spec file
    return p


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    if args.tiny:
        if args.model is None and args.random_init is None and args.shape is None:
            args.shape = TINY_DEFAULTS["shape"]
        for k in ("batch_size", "seq_len", "steps", "warmup", "repeats"):
            if getattr(args, k) is None:
                setattr(args, k, TINY_DEFAULTS[k])
    defaults = dict(batch_size=8, seq_len=256, steps=4, warmup=2, repeats=2)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.prompt_len is None:
        args.prompt_len = max(1, args.seq_len // 4)
    if not 1 <= args.prompt_len < args.seq_len:
        raise SystemExit(f"--prompt-len must be in [1, seq_len - 1], got {args.prompt_len} for seq_len {args.seq_len}")
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or args.batch_size < 1:
        raise SystemExit("--steps, --repeats and --batch-size must be >= 1 and --warmup >= 0")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise SystemExit(f"--arms takes a comma-separated subset of {ARMS}, got {args.arms!r}")
    args.arms = arms
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is None and args.device == "cpu":
        args.threads = 2
    return args


# ---------------------------------------------------------------------------------------------- model + data
def model_source(spec: dict) -> dict:
    """What to build: ``{"kind": "pretrained", "path": ...}`` or ``{"kind": "random", "config": {...}}``."""
    if spec.get("shape"):
        return {"kind": "random", "name": spec["shape"], "config": dict(SHAPES[spec["shape"]])}
    if spec.get("random_init"):
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(spec["random_init"]).to_dict()
        for k in ("quantization_config", "_name_or_path", "transformers_version"):
            cfg.pop(k, None)
        return {"kind": "random", "name": spec["random_init"], "config": cfg}
    from lenvm_rl.defaults import resolve_model

    path = resolve_model(spec.get("model"))
    return {"kind": "pretrained", "name": spec.get("model") or "smollm2-135m-instruct (embedded default)",
            "path": path}


def _config_from_dict(cfg: dict):
    from transformers import AutoConfig

    cfg = dict(cfg)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def load_arm_model(arm: str, source: dict, seed: int):
    """The model of one arm, fp32 master weights (bf16 runs use autocast, as Trainer's --bf16 does)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from lenvm_rl.modeling import LengthValueModel

    torch.manual_seed(seed)
    if source["kind"] == "pretrained":
        if arm == "lenvm":
            return LengthValueModel.from_backbone(source["path"], gamma=GAMMA, dtype=torch.float32)
        return AutoModelForCausalLM.from_pretrained(source["path"], dtype=torch.float32)
    config = _config_from_dict(source["config"])
    if arm == "lenvm":
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
        if arm == "lenvm":
            ex = build_example(prompt, completion, max_length=None)
            feats.append({"input_ids": ex["input_ids"], "labels": ex["labels"]})
        else:
            feats.append({"input_ids": prompt + completion,
                          "labels": [IGNORE_INDEX] * len(prompt) + list(completion)})
    return feats


# ------------------------------------------------------------------------------------------------ measurement
def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


PROTOCOL = "@@bench_train"


class TurnTaker:
    """Child side of the lockstep schedule: say "idle" on stdout, then block until the parent says "go"."""

    def wait_turn(self) -> None:
        sys.stdout.write(f"{PROTOCOL} idle\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise RuntimeError(f"lockstep: expected 'go' from the parent, got {line!r}")


class PeakRSS:
    """Peak RSS from now on: the kernel's high-water mark (VmHWM) after resetting it, else a sampling thread."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.method = "VmHWM"
        self._peak = 0
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "PeakRSS":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            hwm, rss = _proc_status_kib("VmHWM"), _proc_status_kib("VmRSS")
            if hwm is None or rss is None or hwm > rss * 1.05 + 1024:
                raise OSError("VmHWM did not reset")
        except OSError:
            self.method = "sampled"
            self._peak = _proc_status_kib("VmRSS") or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _proc_status_kib("VmRSS") or 0)
            time.sleep(self.interval_s)

    def stop(self) -> int:
        """Peak RSS in KiB since :meth:`start`."""
        if self._thread is None:
            return _proc_status_kib("VmHWM") or 0
        self._stop.set()
        self._thread.join()
        return max(self._peak, _proc_status_kib("VmRSS") or 0)


def _cpu_snapshot() -> tuple[int, int, int] | None:
    """(machine busy jiffies, machine total jiffies, this process's jiffies), from /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        own_jiffies = int(own[11]) + int(own[12])  # utime + stime, all threads
    except (OSError, ValueError, IndexError):
        return None
    total = sum(fields)
    return total - fields[3] - fields[4], total, own_jiffies


def foreign_cpu_share(a, b) -> float | None:
    """Share of the machine's CPU capacity used by other processes (and the hypervisor) between two snapshots.

    Other jobs on a small CPU machine slow an arm down; this number says how much a measurement was disturbed.
    """
    if a is None or b is None or b[1] <= a[1]:
        return None
    return max(0.0, ((b[0] - a[0]) - (b[2] - a[2])) / (b[1] - a[1]))


def wait_for_idle(max_wait_s: float, threshold: float = 0.05, window_s: float = 5.0, windows: int = 2) -> dict:
    """Block until the machine's CPU use (by any process) stays under ``threshold`` for ``windows`` windows."""
    start, quiet, last = time.perf_counter(), 0, None
    while time.perf_counter() - start < max_wait_s:
        a = _cpu_snapshot()
        time.sleep(window_s)
        b = _cpu_snapshot()
        if a is None or b is None or b[1] <= a[1]:
            return {"waited_s": time.perf_counter() - start, "idle": None}
        last = (b[0] - a[0]) / (b[1] - a[1])
        quiet = quiet + 1 if last < threshold else 0
        if quiet >= windows:
            return {"waited_s": time.perf_counter() - start, "idle": True, "busy_share": last}
    return {"waited_s": time.perf_counter() - start, "idle": False, "busy_share": last}


def _fingerprint(batch: dict) -> str:
    h = hashlib.sha1()
    for key in ("input_ids", "attention_mask"):
        t = batch[key]
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def run_arm(spec: dict) -> dict:
    """Train one arm for warmup + steps optimizer steps and measure it (runs in a fresh process by default)."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from lenvm_rl.data import LengthValueCollator
    from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

    arm, device = spec["arm"], spec["device"]
    turns = TurnTaker() if spec.get("lockstep") else None
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cuda = device == "cuda"
    rss_start_kib = _proc_status_kib("VmRSS")

    t0 = time.perf_counter()
    model = load_arm_model(arm, spec["source"], spec["seed"])
    if cuda:
        model.to("cuda")
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    config = model.config
    eos = config.eos_token_id if config.eos_token_id is not None else 0
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else eos

    # Memory baselines right after the model is loaded.
    rss_after_load_kib = _proc_status_kib("VmRSS")
    load_hwm_kib = _proc_status_kib("VmHWM")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        cuda_after_load = torch.cuda.memory_allocated()
    peak_rss = PeakRSS().start()

    total_steps = spec["warmup"] + spec["steps"]
    sequences = synthetic_sequences(total_steps * spec["batch_size"], spec["seq_len"], spec["prompt_len"],
                                    config.vocab_size, eos, spec["seed"])
    features = build_features(arm, sequences)
    # Positions that enter the loss: LenVM the last prompt token through EOS (L + 1 per row); SFT the L
    # completion tokens (the causal-LM loss shifts labels, so position t predicts token t + 1).
    trained_tokens_per_step = sum(sum(1 for x in f["labels"] if x != -100) for f in features) / total_steps

    fingerprints: list[str] = []
    base_collator = LengthValueCollator(pad_token_id=pad)

    def collate(batch):
        out = base_collator(batch)
        fingerprints.append(_fingerprint(out))
        return out

    step_times: list[float] = []
    foreign: list[float | None] = []
    losses: list[float] = []
    quiet, tag = spec.get("quiet", False), spec.get("tag", arm)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if turns is not None:
                turns.wait_turn()  # idle until the other arm has finished its step (and its logging)
            if cuda:
                torch.cuda.synchronize()
            self._cpu = _cpu_snapshot()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - self._t
            step_times.append(dt)
            foreign.append(foreign_cpu_share(self._cpu, _cpu_snapshot()))
            if not quiet:
                i = len(step_times)
                kind = "warm-up" if i <= spec["warmup"] else "measured"
                tok_s = spec["batch_size"] * spec["seq_len"] / dt
                other = "" if foreign[-1] is None else f", other processes {100 * foreign[-1]:.0f}% CPU"
                print(f"[{tag}] step {i}/{total_steps} ({kind}): {dt:.2f} s, {tok_s:.0f} tok/s{other}",
                      file=sys.stderr, flush=True)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory(prefix=f"bench_train_{arm}_") as out_dir:
        common = dict(output_dir=out_dir, per_device_train_batch_size=spec["batch_size"],
                      gradient_accumulation_steps=1, max_steps=total_steps, learning_rate=spec["lr"],
                      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                      bf16=spec["dtype"] == "bf16", use_cpu=not cuda, train_sampling_strategy="sequential",
                      dataloader_num_workers=0, dataloader_pin_memory=cuda, remove_unused_columns=False,
                      save_strategy="no", eval_strategy="no", report_to="none", logging_steps=1,
                      disable_tqdm=True, seed=spec["seed"])
        if arm == "lenvm":
            targs = LengthValueConfig(gamma=GAMMA, max_length=spec["seq_len"], overwrite_output_dir=True, **common)
            trainer = LengthValueTrainer(model=model, args=targs, train_dataset=features, data_collator=collate,
                                         callbacks=[StepTimer()])
        else:
            targs = TrainingArguments(**common)
            trainer = Trainer(model=model, args=targs, train_dataset=features, data_collator=collate,
                              callbacks=[StepTimer()])
        trainer.remove_callback(PrinterCallback)  # per-step log dicts; StepTimer prints its own line
        trainer.train()
        if turns is not None:
            turns.wait_turn()  # hold still until the other arm's last step is done

    peak_rss_kib = peak_rss.stop()
    measured = step_times[spec["warmup"]:]
    tokens_per_step = spec["batch_size"] * spec["seq_len"]
    result = {
        "arm": arm,
        "tag": tag,
        "n_params": n_params,
        "load_s": load_s,
        "step_times_s": step_times,
        "measured_steps": len(measured),
        "tokens_per_step": tokens_per_step,
        "trained_tokens_per_step": trained_tokens_per_step,
        "tokens_per_s": tokens_per_step * len(measured) / sum(measured),
        "trained_tokens_per_s": trained_tokens_per_step * len(measured) / sum(measured),
        "median_step_s": statistics.median(measured),
        "foreign_cpu_share": foreign,  # per step: other processes' share of the machine's CPU (None if unknown)
        "foreign_cpu_share_measured": _mean([x for x in foreign[spec["warmup"]:] if x is not None]),
        "losses": losses,
        "batch_fingerprints": fingerprints,
        "memory": {
            "method": peak_rss.method,
            "rss_start_mib": _mib(rss_start_kib),
            "rss_after_load_mib": _mib(rss_after_load_kib),
            "load_peak_rss_mib": _mib(load_hwm_kib),
            "peak_rss_mib": _mib(peak_rss_kib),
            "peak_rss_increase_mib": _mib(peak_rss_kib - rss_after_load_kib) if rss_after_load_kib else None,
        },
        "optim": str(getattr(targs.optim, "value", targs.optim)),
    }
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        result["memory"].update(method="torch.cuda.max_memory_allocated", cuda_after_load_mib=cuda_after_load / 2**20,
                                cuda_peak_mib=peak / 2**20, cuda_peak_increase_mib=(peak - cuda_after_load) / 2**20)
    return result


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def peak_increase_mib(r: dict) -> float:
    m = r["memory"]
    return m["cuda_peak_increase_mib"] if "cuda_peak_increase_mib" in m else m["peak_rss_increase_mib"]


def peak_total_mib(r: dict) -> float:
    m = r["memory"]
    return m["cuda_peak_mib"] if "cuda_peak_mib" in m else m["peak_rss_mib"]


# ------------------------------------------------------------------------------------------------ orchestration
def _child_env(spec: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _child_cmd(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "evals.bench_train", "--_child", str(spec_path)]


def _read_result(spec: dict, out_path: Path, returncode: int | None) -> dict:
    if returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"arm {spec['arm']!r} failed in its subprocess (exit code {returncode}); its output is "
                           "above.")
    return json.loads(out_path.read_text())


def _run_child(spec: dict) -> dict:
    """Run one arm in a fresh Python process (fair peak memory, no state shared with the other arm)."""
    with tempfile.TemporaryDirectory(prefix="bench_train_child_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**spec, "result_path": str(out_path)}))
        proc = subprocess.run(_child_cmd(spec_path), cwd=str(REPO_ROOT), env=_child_env(spec))
        return _read_result(spec, out_path, proc.returncode)


def _await_idle(proc: subprocess.Popen, arm: str) -> None:
    """Read the child's stdout until it reports idle, passing its other output through."""
    for line in proc.stdout:
        if line.startswith(PROTOCOL):
            return
        sys.stdout.write(line)
    raise RuntimeError(f"arm {arm!r} exited (code {proc.wait()}) before finishing; its output is above.")


def _run_lockstep(specs: list[dict], total_steps: int) -> list[dict]:
    """Both arms in fresh subprocesses at once, taking turns: A's step k, B's step k, B's step k+1, A's ...

    Only one arm computes at any moment (each waits in ``on_step_begin`` until the other has finished its step
    and its logging), so a neighbour's load or a frequency change lands on both arms alike, while each arm keeps
    its own process for a clean peak-memory reading.
    """
    with tempfile.TemporaryDirectory(prefix="bench_train_lockstep_") as tmp:
        procs, outs = [], []
        try:
            for i, spec in enumerate(specs):
                spec_path, out_path = Path(tmp) / f"spec{i}.json", Path(tmp) / f"result{i}.json"
                spec_path.write_text(json.dumps({**spec, "lockstep": True, "result_path": str(out_path)}))
                procs.append(subprocess.Popen(_child_cmd(spec_path), cwd=str(REPO_ROOT), env=_child_env(spec),
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1))
                outs.append(out_path)
            for proc, spec in zip(procs, specs):  # both models loaded and trainers built: nothing else runs now
                _await_idle(proc, spec["arm"])
            idx = list(range(len(specs)))
            for k in range(total_steps + 1):  # the extra turn lets each arm finish training in its own slot
                for i in (idx if k % 2 == 0 else idx[::-1]):
                    procs[i].stdin.write("go\n")
                    procs[i].stdin.flush()
                    if k < total_steps:
                        _await_idle(procs[i], specs[i]["arm"])
            results = []
            for proc, spec, out in zip(procs, specs, outs):
                rest = proc.stdout.read()
                if rest:
                    sys.stdout.write(rest)
                results.append(_read_result(spec, out, proc.wait()))
            return results
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = run_arm(spec)
    Path(spec["result_path"]).write_text(json.dumps(result))


def lockstep_order(arms: list[str], repeat: int) -> list[str]:
    """Which arm takes the first turn alternates between repeats (and between steps inside a repeat)."""
    return arms if repeat % 2 == 0 else arms[::-1]


def arm_order(arms: list[str], repeats: int) -> list[str]:
    """A B, B A, A B, ...: each arm goes first equally often (order effects cancel in the medians)."""
    order = []
    for r in range(repeats):
        order += arms if r % 2 == 0 else arms[::-1]
    return order


def machine_info(device: str) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gib": mem_total, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def summarize(runs: list[dict], arms: list[str]) -> dict:
    per_arm = {}
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        per_arm[arm] = {
            "runs": len(rs),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
            "tokens_per_s_all": [r["tokens_per_s"] for r in rs],
            "trained_tokens_per_s": statistics.median(r["trained_tokens_per_s"] for r in rs),
            "median_step_s": statistics.median(r["median_step_s"] for r in rs),
            "peak_increase_mib": statistics.median(peak_increase_mib(r) for r in rs),
            "peak_increase_mib_all": [peak_increase_mib(r) for r in rs],
            "peak_total_mib": statistics.median(peak_total_mib(r) for r in rs),
            "after_load_mib": statistics.median(
                (r["memory"].get("cuda_after_load_mib") or r["memory"]["rss_after_load_mib"]) for r in rs),
            "n_params": rs[0]["n_params"],
            "final_loss": rs[0]["losses"][-1] if rs[0]["losses"] else None,
            "memory_method": rs[0]["memory"]["method"],
            "foreign_cpu_share": _mean([r["foreign_cpu_share_measured"] for r in rs
                                        if r.get("foreign_cpu_share_measured") is not None]),
        }
    out = {"arms": per_arm}
    if "lenvm" in per_arm and "sft" in per_arm:
        a, b = per_arm["lenvm"], per_arm["sft"]
        tp = a["tokens_per_s"] / b["tokens_per_s"]
        mem = a["peak_increase_mib"] / b["peak_increase_mib"] if b["peak_increase_mib"] else float("nan")
        tot = a["peak_total_mib"] / b["peak_total_mib"] if b["peak_total_mib"] else float("nan")
        out["ratios"] = {"throughput_lenvm_over_sft": tp, "peak_increase_lenvm_over_sft": mem,
                         "peak_total_lenvm_over_sft": tot}
        out["goals"] = {"throughput_ge_1.0": tp >= 1.0, "throughput_ge_1.2_stretch": tp >= 1.2,
                        "memory_le_1.0": mem <= 1.0}
        out["ratios"]["paired_step_throughput_lenvm_over_sft"] = paired_step_ratio(runs)
        fps = {tuple(r["batch_fingerprints"]) for r in runs}
        out["identical_batches"] = len(fps) == 1
    return out


def paired_step_ratio(runs: list[dict]) -> float | None:
    """Median over (repeat, measured step) of SFT step time / LenVM step time: robust to drift between steps."""
    by = {(r["arm"], r.get("repeat", 0)): r for r in runs}
    ratios = []
    for (arm, rep), a in by.items():
        b = by.get(("sft", rep))
        if arm != "lenvm" or b is None:
            continue
        warm = len(a["step_times_s"]) - a["measured_steps"]
        ratios += [tb / ta for ta, tb in zip(a["step_times_s"][warm:], b["step_times_s"][warm:]) if ta > 0]
    return statistics.median(ratios) if ratios else None


def markdown_table(result: dict) -> str:
    m, s, cfg = result["machine"], result["summary"], result["config"]
    dev = m["device"] + (f" ({m['gpu']})" if m.get("gpu") else "")
    cuda = m["device"] == "cuda"
    mem_inc = "peak alloc. increase (MiB)" if cuda else "peak RSS increase (MiB)"
    mem_tot = "peak alloc. total (MiB)" if cuda else "peak RSS total (MiB)"
    lines = [
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM; torch {m['torch']}, "
        f"transformers {m['transformers']}; device {dev}; threads {cfg['threads']}",
        f"Model: {cfg['model_name']} ({s['arms'][cfg['arms'][0]]['n_params'] / 1e6:.1f} M params in the "
        f"{cfg['arms'][0]} arm); batch {cfg['batch_size']} x seq {cfg['seq_len']} (prompt {cfg['prompt_len']}), "
        f"{cfg['dtype']}, {cfg['warmup']} warm-up + {cfg['steps']} measured steps, {cfg['repeats']} run(s) per arm "
        f"({'in one process' if cfg['in_process'] else 'each in a fresh subprocess'}; schedule {cfg['schedule']}, "
        f"order {' '.join(cfg['order'])}); medians; identical batches: {s.get('identical_batches', 'n/a')}",
        "",
        f"| arm | tokens/s | step (s) | {mem_inc} | {mem_tot} |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm, a in s["arms"].items():
        lines.append(f"| {ARM_LABELS[arm]} | {a['tokens_per_s']:.0f} | {a['median_step_s']:.3g} | "
                     f"{a['peak_increase_mib']:.0f} | {a['peak_total_mib']:.0f} |")
    if "ratios" in s:
        r = s["ratios"]
        lines.append(f"| **LenVM / SFT** | **{r['throughput_lenvm_over_sft']:.2f}x** | "
                     f"{s['arms']['lenvm']['median_step_s'] / s['arms']['sft']['median_step_s']:.2f}x | "
                     f"**{r['peak_increase_lenvm_over_sft']:.2f}x** | {r['peak_total_lenvm_over_sft']:.2f}x |")
    paired = s.get("ratios", {}).get("paired_step_throughput_lenvm_over_sft")
    if paired is not None:
        lines += ["", f"Median of paired step-time ratios (SFT step / LenVM step, same repeat and step): {paired:.2f}x."]
    shares = {arm: a.get("foreign_cpu_share") for arm, a in s["arms"].items()}
    if not cuda and any(v is not None for v in shares.values()):
        txt = ", ".join(f"{arm} {100 * v:.0f}%" for arm, v in shares.items() if v is not None)
        lines += ["", f"Other processes' share of the machine's CPU during the measured steps (mean): {txt}."]
        if any(v is not None and v > 0.1 for v in shares.values()):
            lines.append("WARNING: the machine was busy with other work during the measurement; the timings are "
                         "disturbed (re-run on an idle machine, or raise --repeats).")
    return "\n".join(lines)


def _maybe_wait_idle(args: argparse.Namespace) -> dict | None:
    if args.wait_idle <= 0:
        return None
    if not args.quiet:
        print(f"== waiting up to {args.wait_idle:.0f} s for an idle machine", file=sys.stderr, flush=True)
    info = wait_for_idle(args.wait_idle)
    if not args.quiet and info["idle"] is False:
        print(f"== machine still busy after {info['waited_s']:.0f} s; measuring anyway", file=sys.stderr, flush=True)
    return info


def write_result(result: dict, output: str, default_output: str) -> dict:
    """Write the JSON (the default path is relative to the repository root), print the table and the path."""
    out = REPO_ROOT / default_output if output == default_output else Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(result["markdown"])
    print(f"\nwritten to {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result dict (also written to ``--output``) and prints a markdown table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args._child:
        _child_main(args._child)
        return {}
    args = resolve_options(args)
    command = "python -m evals.bench_train" + ("" if not argv else " " + shlex.join(argv))

    base = {k: getattr(args, k) for k in ("model", "random_init", "shape", "batch_size", "seq_len", "prompt_len",
                                           "steps", "warmup", "dtype", "threads", "device", "lr", "seed", "quiet")}
    source = model_source(base)  # converts the embedded default once, here, not inside a timed child
    base["source"] = source
    if args.in_process:
        args.schedule = "sequential"
    lockstep = args.schedule == "lockstep" and len(args.arms) > 1
    total_steps = args.warmup + args.steps

    if args.in_process and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runs = []
    if lockstep:
        order = []
        for r in range(args.repeats):
            arms = lockstep_order(args.arms, r)
            order.append("+".join(arms))
            idle = _maybe_wait_idle(args)
            if not args.quiet:
                print(f"== run {r + 1}/{args.repeats}: {' and '.join(arms)} in lockstep, each in a fresh subprocess",
                      file=sys.stderr, flush=True)
            specs = [{**base, "arm": arm, "tag": f"{arm} run {r + 1}/{args.repeats}"} for arm in arms]
            for res in _run_lockstep(specs, total_steps):
                res["repeat"], res["wait_idle"] = r, idle
                runs.append(res)
    else:
        order = arm_order(args.arms, args.repeats)
        for i, arm in enumerate(order):
            rep = sum(1 for a in order[:i + 1] if a == arm)
            spec = {**base, "arm": arm, "tag": f"{arm} run {rep}/{args.repeats}"}
            idle = _maybe_wait_idle(args)
            if not args.quiet:
                print(f"== {spec['tag']} ({'in process' if args.in_process else 'fresh subprocess'})",
                      file=sys.stderr, flush=True)
            res = run_arm(spec) if args.in_process else _run_child(spec)
            res["repeat"], res["wait_idle"] = rep - 1, idle
            runs.append(res)

    config = {k: v for k, v in base.items() if k not in ("source", "quiet")}
    config["wait_idle_s"] = args.wait_idle
    config.update(model_name=source["name"], model_kind=source["kind"], repeats=args.repeats, arms=args.arms,
                  order=order, schedule="lockstep" if lockstep else "sequential", in_process=args.in_process,
                  optim=runs[0]["optim"],
                  tokens_per_step=args.batch_size * args.seq_len)
    if source["kind"] == "random":
        config["model_config"] = source["config"]
    result = {"benchmark": "lenvm_train_vs_sft", "command": command, "machine": machine_info(args.device),
              "config": config, "summary": summarize(runs, args.arms), "runs": runs,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result["markdown"] = markdown_table(result)

    return write_result(result, args.output, DEFAULT_OUTPUT)


if __name__ == "__main__":
    main()
