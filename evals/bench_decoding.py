"""Benchmark: the cost of length-guided decoding and of tree scoring.

Two comparisons, measured side by side in one process on the same models, prompts and token counts:

* **guided vs plain generation.** ``model.generate`` sampling with the generator alone ("plain", top-k = K)
  against the same call with :class:`lenvm_rl.decoding.LengthGuidedLogitsProcessor` (mode ``tilt``, a finite
  beta, top-k = K candidates scored by the critic each step; "guided"). Every call is forced to produce exactly
  ``--new-tokens`` tokens per row (``min_new_tokens = max_new_tokens = N``), so both arms do the same number of
  steps. Reported: wall time of one ``generate`` call / N (ms per token step; the whole batch makes one token per
  row per step; prefills included) and the decode-only time per step (between the first and the last logits
  call, prefills excluded), and guided / plain for both.
* **tree vs naive candidate scoring.** :class:`lenvm_rl.scoring.TreeScorer` (one forward of the chosen previous
  token + K candidates on the cached prefix, 4-D mask, cache cropped after) against the naive ways of scoring
  the same K candidates after the same prefix:

  - ``naive, per-candidate cached`` (the baseline of the goal; what the reference's per-candidate requests
    amount to): one 1-token forward appends the previous token to the prefix cache, then K separate 1-token
    forwards, each on its own copy of the prefix KV cache;
  - ``naive, cached + crop``: as above but each candidate is appended to the prefix cache itself and cropped
    off again (no copies; the best a sequential loop can do);
  - ``naive, full forward``: :func:`lenvm_rl.scoring.naive_candidate_values`, K full forwards of prefix +
    candidate without any cache (timed on ``--full-forward-candidates`` of the K candidates and scaled to K,
    since the K forwards are identical in cost).

  Reported: ms per decoding step (median over measured steps) and naive / tree. All arms see the same tokens;
  their values are compared at the first step (max abs difference) as a sanity check.

Each (batch, K) starts with an unrecorded full-length warm-up of every arm. Arms are interleaved (plain, guided,
guided, plain, ... per repeat; the scorers take turns inside every step, in rotating order), and the share of the
machine's CPU used by other processes during each arm's timed calls is recorded: this benchmark usually runs on a
small shared CPU machine. Before measuring it waits (up to
``--wait-idle`` seconds) for the machine to be idle, and on CPU a run disturbed by other processes (more than
``--max-foreign`` of the CPU) is discarded and measured again (at most ``--retries`` times).

Models: by default the embedded SmolLM2-135M-Instruct as generator and, with a fresh random value head, as the
critic backbone (``LengthValueModel.from_backbone``); ``--shape qwen2.5-7b+1.5b`` builds randomly initialised
models of real shapes (bf16, batch 1/8/32; meant for a CUDA machine); ``--tiny`` is a seconds-long smoke run on
random tiny Llamas (the same code path as ``--shape``).

Goals (from the issue): tree scoring >= 3x faster than naive per-candidate cached scoring at K = 15 (CPU);
on a GPU, guided / plain <= 1.3x against eager ``generate``.

Run ``python -m evals.bench_decoding`` from the repository root; ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so `python evals/bench_decoding.py` finds lenvm_rl and evals
    sys.path.insert(0, str(REPO_ROOT))

from evals.bench_train import (SHAPES, _config_from_dict, _cpu_snapshot, foreign_cpu_share,  # noqa: E402
                               machine_info, wait_for_idle, write_result)

DEFAULT_OUTPUT = "evals/results/bench_decoding.json"
GAMMA = 0.99
DEFAULT_BETA = 1.0  # tilt strength; any finite value costs the same
GEN_ARMS = ("plain", "guided")
SCORE_ARMS = ("tree", "naive_cached", "naive_crop")
ARM_LABELS = {"plain": "plain generate", "guided": "guided generate", "tree": "tree scoring",
              "naive_cached": "naive, per-candidate cached", "naive_crop": "naive, cached + crop",
              "naive_full": "naive, full forward"}
TREE_GOAL, TREE_GOAL_K = 3.0, 15
GPU_GOAL = 1.3

# Randomly initialised (generator, critic) pairs of real shapes (bench_train.SHAPES); --tiny uses "tiny".
SHAPE_PAIRS: dict[str, tuple[str, str]] = {
    "qwen2.5-7b+1.5b": ("qwen2.5-7b", "qwen2.5-1.5b"),
    "qwen2.5-7b+0.5b": ("qwen2.5-7b", "qwen2.5-0.5b"),
    "qwen2.5-1.5b+0.5b": ("qwen2.5-1.5b", "qwen2.5-0.5b"),
    "tiny": ("tiny-llama", "tiny-llama"),
}

# Defaults per mode; explicit options override them.
MODE_DEFAULTS = {
    "default": dict(batch_sizes="1,8", ks="5,15", new_tokens=32, prompt_len=96, score_steps=8, repeats=3,
                    full_forward_candidates=2, wait_idle=900.0),
    "shape": dict(batch_sizes="1,8,32", ks="5,15", new_tokens=32, prompt_len=512, score_steps=8, repeats=3,
                  full_forward_candidates=2, wait_idle=0.0),
    "tiny": dict(batch_sizes="1,2", ks="5,15", new_tokens=4, prompt_len=12, score_steps=3, repeats=1,
                 full_forward_candidates=2, wait_idle=0.0),
}


# ----------------------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evals.bench_decoding",
        description="Length-guided decoding vs plain sampling (ms per token, guided/plain) and tree candidate "
                    "scoring vs naive per-candidate scoring (ms per step, naive/tree), same models, prompts and "
                    "token counts, interleaved in one process.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="Generator and critic backbone (hub id or local path); default: the embedded default "
                          "model (lenvm_rl.defaults.resolve_model(None), SmolLM2-135M-Instruct). The critic gets a "
                          "random value head (the cost does not depend on its weights).")
    src.add_argument("--shape", choices=sorted(SHAPE_PAIRS), default=None,
                     help="Randomly initialised generator+critic of built-in shapes, e.g. qwen2.5-7b+1.5b (meant for "
                          "CUDA; defaults there: bf16, batch 1,8,32, prompt 512). The critic takes the generator's "
                          "vocabulary size so that every sampled id is valid for both. 'tiny' = --tiny's models.")
    p.add_argument("--tiny", action="store_true",
                   help="Smoke mode: random tiny Llamas (unless --shape is given), batch 1,2, prompt 12, 4 new tokens, "
                        "3 scoring steps, 1 repeat, no idle wait (explicit options still override).")
    p.add_argument("--batch-sizes", default=None, help="Comma-separated batch sizes (default 1,8; --shape: 1,8,32).")
    p.add_argument("--ks", default=None, help="Comma-separated candidate counts K (default 5,15).")
    p.add_argument("--new-tokens", type=int, default=None,
                   help="Tokens every row generates in each generate call, exactly (default 32).")
    p.add_argument("--prompt-len", type=int, default=None,
                   help="Tokens of the longest prompt (rows are 3/4 to all of it, left-padded; default 96, "
                        "--shape: 512).")
    p.add_argument("--score-steps", type=int, default=None,
                   help="Decoding steps measured per scoring run (default 8).")
    p.add_argument("--full-forward-candidates", type=int, default=None,
                   help="Naive full forward: candidates actually run per step, the time is scaled to K "
                        "(default 2; 0 skips this arm).")
    p.add_argument("--repeats", type=int, default=None,
                   help="Measured runs per arm and (batch, K) (default 3; --tiny: 1).")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="Weights of both models. auto: bf16 on CUDA and on CPUs with native bf16 (AMX / "
                        "AVX512-BF16; measured faster than fp32 on such a Xeon for the 135M models: 1.9x for a 8 x 16 "
                        "token critic step, equal for 1 token), fp32 on other CPUs.")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default 2 on CPU).")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help="Tilt strength of the guided arm (default 1).")
    p.add_argument("--wait-idle", type=float, default=None, metavar="SECONDS",
                   help="Before measuring, wait up to this long for the machine to be idle (other processes under 5%% "
                        "of the CPU for 10 s). Default 900 on CPU, 0 with --tiny / --shape or on CUDA.")
    p.add_argument("--wait-idle-each", type=float, default=None, metavar="SECONDS",
                   help="Also wait up to this long before each (batch, K) configuration (default: min(60, "
                        "--wait-idle)).")
    p.add_argument("--max-foreign", type=float, default=0.1, metavar="SHARE",
                   help="On CPU, a run during which other processes used more than this share of the machine's CPU "
                        "is discarded and measured again (default 0.1).")
    p.add_argument("--retries", type=int, default=2, help="How often one run may be measured again (default 2).")
    p.add_argument("--seed", type=int, default=0, help="Seed of prompts, candidates, sampling and random weights.")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"JSON result path (default {DEFAULT_OUTPUT}).")
    p.add_argument("--quiet", action="store_true", help="No progress lines.")
    return p


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{what} takes comma-separated whole numbers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise SystemExit(f"{what} takes comma-separated numbers >= 1, got {text!r}")
    return values


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    import torch

    if args.tiny and args.model is None and args.shape is None:
        args.shape = "tiny"
    mode = "tiny" if args.tiny or args.shape == "tiny" else ("shape" if args.shape else "default")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    defaults = dict(MODE_DEFAULTS[mode])
    if args.device == "cuda":
        defaults["wait_idle"] = 0.0
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.mode = mode
    args.batch_sizes = _int_list(args.batch_sizes, "--batch-sizes")
    args.ks = _int_list(args.ks, "--ks")
    if args.new_tokens < 2:
        raise SystemExit("--new-tokens must be >= 2 (the decode-only time needs two steps)")
    if args.prompt_len < 4:
        raise SystemExit("--prompt-len must be >= 4")
    if args.score_steps < 1 or args.repeats < 1 or args.full_forward_candidates < 0 or args.retries < 0:
        raise SystemExit("--score-steps and --repeats must be >= 1, --full-forward-candidates and --retries >= 0")
    if not math.isfinite(args.beta):
        raise SystemExit("--beta must be finite")
    args.dtype_requested = args.dtype
    if args.dtype == "auto":
        args.dtype = "bf16" if args.device == "cuda" or cpu_has_native_bf16() else "fp32"
    if args.threads is None and args.device == "cpu":
        args.threads = 2
    if args.wait_idle_each is None:
        args.wait_idle_each = min(60.0, args.wait_idle)
    return args


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AMX or AVX512-BF16); without it bf16 is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


# ---------------------------------------------------------------------------------------------- models + data
def load_models(args: argparse.Namespace) -> dict:
    """Generator (a causal LM), critic (``LengthCritic`` around a ``LengthValueModel``), ids of EOS / pad."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.modeling import LengthValueModel

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(args.seed)
    if args.shape:
        gen_shape, critic_shape = SHAPE_PAIRS[args.shape]
        gen_cfg = dict(SHAPES[gen_shape])
        critic_cfg = dict(SHAPES[critic_shape], vocab_size=gen_cfg["vocab_size"])  # every generated id is valid
        with torch.device(args.device):  # initialise in place (a 7B model initialised on the CPU takes minutes)
            generator = AutoModelForCausalLM.from_config(_config_from_dict(gen_cfg), dtype=dtype)
            backbone = AutoModel.from_config(_config_from_dict(critic_cfg), dtype=dtype)
            critic_model = LengthValueModel.from_backbone(backbone, gamma=GAMMA)
        tokenizer = None
        eos, pad = gen_cfg["eos_token_id"], gen_cfg.get("pad_token_id", gen_cfg["eos_token_id"])
        names = {"generator": f"{gen_shape} (random init)", "critic": f"{critic_shape} (random init)"}
        model_configs = {"generator": gen_cfg, "critic": critic_cfg}
    else:
        from lenvm_rl.defaults import resolve_model

        path = resolve_model(args.model)
        generator = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        critic_model = LengthValueModel.from_backbone(path, gamma=GAMMA, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        name = args.model or "smollm2-135m-instruct (embedded default)"
        names = {"generator": name, "critic": f"{name} backbone + random value head"}
        model_configs = None
    generator = generator.to(args.device).eval().requires_grad_(False)
    critic_model = critic_model.to(args.device)
    critic = LengthCritic(critic_model, tokenizer)
    special = {i for i in (eos, pad, getattr(generator.config, "bos_token_id", None)) if i is not None}
    n_params = {"generator": sum(p.numel() for p in generator.parameters()),
                "critic": sum(p.numel() for p in critic_model.parameters())}
    return {"generator": generator, "critic": critic, "eos": eos, "pad": pad, "special": sorted(special),
            "vocab_size": min(generator.config.vocab_size, critic_model.config.vocab_size), "names": names,
            "n_params": n_params, "model_configs": model_configs}


def random_ids(shape, vocab_size: int, special, generator):
    """Random ordinary token ids (no EOS / pad / BOS; the lowest ids, usually special, are avoided)."""
    import torch

    low = min(100, vocab_size // 8)
    ids = torch.randint(low, vocab_size, shape, generator=generator)
    for s in special:
        ids[ids == s] = low if low not in special else low + 1
    return ids


def make_prompts(batch: int, prompt_len: int, vocab_size: int, special, seed: int):
    """Left-padded random prompts: row 0 has ``prompt_len`` tokens, the others between 3/4 of it and all of it."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shortest = max(2, (3 * prompt_len) // 4)
    lengths = [prompt_len] + torch.randint(shortest, prompt_len + 1, (batch - 1,), generator=g).tolist()
    ids = random_ids((batch, prompt_len), vocab_size, special, g)
    mask = torch.ones(batch, prompt_len, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :prompt_len - n] = 0
    return ids, mask, lengths


# ------------------------------------------------------------------------------------------------ measurement
def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class CpuShare:
    """Accumulates /proc/stat deltas over the timed calls of one arm: other processes' share of the CPU (None when
    the calls were too short to tell)."""

    def __init__(self):
        self.busy = self.total = self.own = 0

    def add(self, a, b) -> None:
        if a is None or b is None or b[1] <= a[1]:
            return
        self.busy += b[0] - a[0]
        self.total += b[1] - a[1]
        self.own += b[2] - a[2]

    MIN_JIFFIES = 50  # /proc/stat counts in 1/100 s per core: shorter spans give no meaningful share

    def share(self) -> float | None:
        if self.total < self.MIN_JIFFIES:
            return None
        return foreign_cpu_share((0, 0, 0), (self.busy, self.total, self.own))


class Timer:
    """Times one call (with CUDA sync) and books the CPU snapshots to an arm."""

    def __init__(self, device):
        self.device, self.shares = device, {}

    def __call__(self, arm: str, fn, *a, **kw):
        sync(self.device)
        snap = _cpu_snapshot()
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        sync(self.device)
        dt = time.perf_counter() - t0
        self.shares.setdefault(arm, CpuShare()).add(snap, _cpu_snapshot())
        return out, dt


def _step_clock_class():
    from transformers import LogitsProcessor

    class StepClock(LogitsProcessor):
        """Records when each logits call happens (placed after the guided processor): decode-only step times."""

        def __init__(self, device):
            self.device, self.times = device, []

        def __call__(self, input_ids, scores):
            sync(self.device)
            self.times.append(time.perf_counter())
            return scores

    return StepClock


def run_generate(models: dict, ids, mask, new_tokens: int, k: int, guided: bool, beta: float, seed: int,
                 device) -> dict:
    """One ``generate`` call producing exactly ``new_tokens`` tokens per row; returns its timings."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    from lenvm_rl.decoding import LengthGuidedLogitsProcessor

    gen = models["generator"]
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0 if guided else k, top_p=1.0,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=models["pad"],
                              eos_token_id=models["eos"])
    clock = _step_clock_class()(device)
    processors = []
    if guided:
        processors.append(LengthGuidedLogitsProcessor(models["critic"], "tilt", beta=beta, eos_token_id=models["eos"],
                                                      pad_token_id=models["pad"], top_k=k))
    processors.append(clock)
    ids, mask = ids.to(device), mask.to(device)
    torch.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    out = gen.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                       logits_processor=LogitsProcessorList(processors))
    sync(device)
    total = time.perf_counter() - t0
    made = out.shape[1] - ids.shape[1]
    if made != new_tokens or len(clock.times) != new_tokens:
        raise RuntimeError(f"generate made {made} tokens in {len(clock.times)} steps, expected exactly {new_tokens}")
    return {"total_s": total, "ms_per_token": 1e3 * total / new_tokens,
            "decode_ms_per_step": 1e3 * (clock.times[-1] - clock.times[0]) / (new_tokens - 1),
            "first_token_ms": 1e3 * (clock.times[0] - t0)}


def copy_cache(cache):
    """A real copy of a KV cache (new tensors): a DynamicCache is rebuilt from its layers, anything else deep-copied."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    if type(cache) is DynamicCache and layers and all(getattr(x, "keys", None) is not None for x in layers):
        try:
            return DynamicCache(ddp_cache_data=[(x.keys, x.values) for x in layers])  # update() concatenates: a copy
        except TypeError:
            pass
    return copy.deepcopy(cache)


class NaiveCachedScorer:
    """The naive baseline with a KV cache: per step, one 1-token forward appends the chosen previous token to the
    prefix cache, then K separate 1-token forwards score the candidates, each on its own copy of the prefix cache
    (``copy=True``) or on the prefix cache itself, cropped back after each (``copy=False``)."""

    def __init__(self, model, copy: bool = True):
        self.model, self.copy = model, copy
        self.cache = self.key_mask = self.next_position = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    def start(self, prompt_ids, attention_mask) -> None:
        import torch

        from lenvm_rl.modeling import position_ids_from_mask

        prompt_ids, attention_mask = prompt_ids.to(self.device), attention_mask.to(self.device).long()
        with torch.no_grad():
            out = self.model(input_ids=prompt_ids, attention_mask=attention_mask,
                             position_ids=position_ids_from_mask(attention_mask), use_cache=True)
        self.cache, self.key_mask, self.next_position = out.cache, attention_mask, attention_mask.sum(-1)

    def step(self, previous, candidates):
        import torch

        previous, candidates = previous.to(self.device), candidates.to(self.device)
        batch, k = candidates.shape
        ones = torch.ones(batch, 1, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.key_mask = torch.cat([self.key_mask, ones], 1)
            out = self.model(input_ids=previous[:, None], attention_mask=self.key_mask,
                             position_ids=self.next_position[:, None], cache=self.cache, use_cache=True)
            self.cache, self.next_position = out.cache, self.next_position + 1
            mask = torch.cat([self.key_mask, ones], 1)
            values = []
            for j in range(k):
                cache = copy_cache(self.cache) if self.copy else self.cache
                o = self.model(input_ids=candidates[:, j:j + 1], attention_mask=mask,
                               position_ids=self.next_position[:, None], cache=cache, use_cache=True)
                if not self.copy:
                    self.cache.crop(-1)
                values.append(o.value[:, -1])
        return out.value[:, -1], torch.stack(values, 1)


def run_scoring(models: dict, ids, mask, k: int, steps: int, full_candidates: int, seed: int, rotate: int,
                timer: Timer, device) -> dict:
    """One decoding run of ``steps`` steps on the same tokens for every scorer, interleaved step by step."""
    import torch

    from lenvm_rl.scoring import TreeScorer, naive_candidate_values

    model = models["critic"].model
    g = torch.Generator().manual_seed(seed)
    scorers = {"tree": TreeScorer(model), "naive_cached": NaiveCachedScorer(model, copy=True),
               "naive_crop": NaiveCachedScorer(model, copy=False)}
    for s in scorers.values():
        s.start(ids[:, :-1], mask[:, :-1])  # as the guided processor does: the last prompt token is step 0's "previous"
    prefix_ids, prefix_mask = ids.to(device), mask.to(device)  # for the full forward: prompt + chosen tokens so far
    previous = ids[:, -1]
    times = {arm: [] for arm in scorers}
    full_ms, diffs = None, {}
    for t in range(steps):
        candidates = random_ids((ids.shape[0], k), models["vocab_size"], models["special"], g)
        arms = list(scorers)
        arms = arms[(t + rotate) % len(arms):] + arms[:(t + rotate) % len(arms)]
        values = {}
        for arm in arms:
            (_, v), dt = timer(arm, scorers[arm].step, previous, candidates)
            times[arm].append(1e3 * dt)
            values[arm] = v.float().cpu()
        if t == 0:
            diffs = {f"{arm}_vs_tree": float((values[arm] - values["tree"]).abs().max()) for arm in values
                     if arm != "tree"}
            if full_candidates:
                j = min(full_candidates, k)
                cand = candidates[:, :j].to(device)
                v, dt = timer("naive_full", naive_candidate_values, model, prefix_ids, prefix_mask, cand)
                full_ms = 1e3 * dt * k / j
                diffs["naive_full_vs_tree"] = float((v.float().cpu() - values["tree"][:, :j]).abs().max())
        previous = candidates[:, 0]
        prefix_ids = torch.cat([prefix_ids, previous[:, None].to(device)], 1)
        prefix_mask = torch.cat([prefix_mask, torch.ones_like(prefix_mask[:, :1])], 1)
    return {"step_ms": times, "naive_full_ms_per_step": full_ms, "max_abs_diff": diffs}


def _log(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def _maybe_wait(args, seconds: float, what: str) -> dict | None:
    if seconds <= 0 or args.device != "cpu":
        return None
    _log(args, f"== waiting up to {seconds:.0f} s for an idle machine ({what})")
    info = wait_for_idle(seconds)
    if info.get("idle") is False:
        _log(args, f"== machine still busy after {info['waited_s']:.0f} s "
                   f"(busy share {100 * (info.get('busy_share') or 0):.0f}%); measuring anyway")
    return info


def _cpu_counts(a, b) -> list[int] | None:
    """Machine busy, machine total and own jiffies between two snapshots (see CpuShare)."""
    if a is None or b is None or b[1] <= a[1]:
        return None
    return [b[0] - a[0], b[1] - a[1], b[2] - a[2]]


def _share_of(counts: list[list[int] | None]) -> float | None:
    share = CpuShare()
    for c in counts:
        if c:
            share.busy, share.total, share.own = share.busy + c[0], share.total + c[1], share.own + c[2]
    return share.share()


def _measure_with_retries(args, what: str, fn) -> tuple[dict, list[dict]]:
    """``fn()`` returns a run with a ``foreign_cpu_share``; on CPU a run disturbed by other processes (share above
    ``--max-foreign``) is discarded and measured again after waiting for an idle machine, at most ``--retries``
    times (the last attempt is kept whatever its share)."""
    discarded = []
    for attempt in range(args.retries + 1):
        res = fn()
        share = res.get("foreign_cpu_share")
        if args.device != "cpu" or share is None or share <= args.max_foreign or attempt == args.retries:
            return res, discarded
        discarded.append(res)
        _log(args, f"   {what}: other processes took {100 * share:.0f}% of the CPU; measuring it again")
        _maybe_wait(args, max(args.wait_idle_each, 10.0), f"retry of {what}")
    raise AssertionError("unreachable")


def measure_config(args, models: dict, batch: int, k: int) -> dict:
    """All arms for one (batch, K): a warm-up, then ``repeats`` interleaved rounds (plain, guided, scoring;
    guided first in every other round); disturbed runs are measured again (``_measure_with_retries``)."""
    ids, mask, lengths = make_prompts(batch, args.prompt_len, models["vocab_size"], models["special"], args.seed)
    dev = args.device
    # Warm-up (not recorded), at full length: first calls allocate memory for these shapes and pick kernels (on an
    # H200 the first full-length call of each shape was up to 3x slower than the next after a 2-token warm-up).
    for guided in (False, True):
        run_generate(models, ids, mask, args.new_tokens, k, guided, args.beta, args.seed, dev)
    run_scoring(models, ids, mask, k, min(2, args.score_steps), min(1, args.full_forward_candidates), args.seed, 0,
                Timer(dev), dev)

    def generate_once(arm: str, r: int) -> dict:
        snap = _cpu_snapshot()
        res = run_generate(models, ids, mask, args.new_tokens, k, arm == "guided", args.beta, args.seed + r, dev)
        res["cpu"] = _cpu_counts(snap, _cpu_snapshot())
        res["foreign_cpu_share"] = _share_of([res["cpu"]])
        return res

    def score_once(r: int) -> dict:
        timer = Timer(dev)
        res = run_scoring(models, ids, mask, k, args.score_steps, args.full_forward_candidates, args.seed + 1000 + r,
                          r, timer, dev)
        res["cpu"] = {arm: [sh.busy, sh.total, sh.own] for arm, sh in timer.shares.items()}
        res["foreign_cpu_share"] = _share_of(list(res["cpu"].values()))
        return res

    gen_runs = {arm: [] for arm in GEN_ARMS}
    score_runs, order, discarded = [], [], []
    tag = f"B={batch} K={k}"
    for r in range(args.repeats):
        arms = list(GEN_ARMS) if r % 2 == 0 else list(reversed(GEN_ARMS))
        order.append("+".join(arms))
        for arm in arms:
            t0 = time.perf_counter()
            res, bad = _measure_with_retries(args, f"{tag} run {r + 1} {arm}", lambda: generate_once(arm, r))
            gen_runs[arm].append(res)
            discarded += [{"arm": arm, "repeat": r, **b} for b in bad]
            _log(args, f"   {tag} run {r + 1}/{args.repeats} {arm}: {res['ms_per_token']:.1f} ms/token "
                       f"(decode {res['decode_ms_per_step']:.1f} ms/step, {time.perf_counter() - t0:.1f} s)")
        res, bad = _measure_with_retries(args, f"{tag} run {r + 1} scoring", lambda: score_once(r))
        score_runs.append(res)
        discarded += [{"arm": "scoring", "repeat": r, **b} for b in bad]
        _log(args, f"   {tag} run {r + 1}/{args.repeats} scoring: " + ", ".join(
            f"{arm} {statistics.median(v):.1f}" for arm, v in res["step_ms"].items())
            + (f", naive_full {res['naive_full_ms_per_step']:.1f}" if res["naive_full_ms_per_step"] else "")
            + " ms/step")
    shares = {arm: _share_of([g["cpu"] for g in gen_runs[arm]]) for arm in GEN_ARMS}
    shares.update({arm: _share_of([s["cpu"].get(arm) for s in score_runs])
                   for arm in SCORE_ARMS + ("naive_full",) if any(arm in s["cpu"] for s in score_runs)})
    return summarize_config(batch, k, lengths, gen_runs, score_runs, shares, order, discarded)


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def summarize_config(batch, k, lengths, gen_runs, score_runs, shares, order, discarded) -> dict:
    med = statistics.median
    row = {"batch": batch, "k": k, "prompt_lengths": lengths, "order": order}
    for arm in GEN_ARMS:
        row[f"{arm}_ms_per_token"] = med(r["ms_per_token"] for r in gen_runs[arm])
        row[f"{arm}_decode_ms_per_step"] = med(r["decode_ms_per_step"] for r in gen_runs[arm])
        row[f"{arm}_first_token_ms"] = med(r["first_token_ms"] for r in gen_runs[arm])
    row["guided_over_plain"] = row["guided_ms_per_token"] / row["plain_ms_per_token"]
    row["guided_over_plain_decode"] = row["guided_decode_ms_per_step"] / row["plain_decode_ms_per_step"]
    row["guided_over_plain_paired"] = med(g["ms_per_token"] / p["ms_per_token"]
                                          for g, p in zip(gen_runs["guided"], gen_runs["plain"]))
    for arm in SCORE_ARMS:
        row[f"{arm}_ms_per_step"] = med(x for r in score_runs for x in r["step_ms"][arm])
    fulls = [r["naive_full_ms_per_step"] for r in score_runs if r["naive_full_ms_per_step"] is not None]
    row["naive_full_ms_per_step"] = med(fulls) if fulls else None
    tree = row["tree_ms_per_step"]
    row["naive_over_tree"] = row["naive_cached_ms_per_step"] / tree
    row["naive_crop_over_tree"] = row["naive_crop_ms_per_step"] / tree
    row["naive_full_over_tree"] = _ratio(row["naive_full_ms_per_step"], tree)
    row["naive_over_tree_paired"] = med(n / t for r in score_runs
                                        for n, t in zip(r["step_ms"]["naive_cached"], r["step_ms"]["tree"]))
    row["max_abs_diff"] = {key: max(r["max_abs_diff"].get(key, 0.0) for r in score_runs)
                           for key in score_runs[0]["max_abs_diff"]}
    row["foreign_cpu_share"] = shares  # over the kept runs
    row["runs"] = {"generate": gen_runs, "scoring": score_runs}
    row["discarded_runs"] = discarded
    return row


def evaluate_goals(rows: list[dict], device: str) -> dict:
    tree = {f"batch {r['batch']}": r["naive_over_tree"] >= TREE_GOAL for r in rows if r["k"] == TREE_GOAL_K}
    goals = {"tree_ge_3x_naive_at_k15": {"goal": f"naive per-candidate cached / tree >= {TREE_GOAL} at K = "
                                                 f"{TREE_GOAL_K} (CPU)",
                                         "applies": device == "cpu" and bool(tree), "met": tree or None,
                                         "all_met": all(tree.values()) if tree else None},
             "guided_over_plain_le_1.3_gpu": {"goal": f"guided / plain <= {GPU_GOAL} vs eager generate (GPU)",
                                              "applies": device == "cuda"}}
    if device == "cuda":
        gpu = {f"batch {r['batch']}, K {r['k']}": r["guided_over_plain"] <= GPU_GOAL for r in rows}
        goals["guided_over_plain_le_1.3_gpu"].update(met=gpu, all_met=all(gpu.values()))
    return goals


def _fmt(x, spec=".1f", suffix="") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B params" if n >= 1e9 else f"{n / 1e6:.3g} M params"


def markdown_table(result: dict) -> str:
    m, cfg, rows = result["machine"], result["config"], result["results"]
    dev = m["device"] + (f" ({m['gpu']})" if m.get("gpu") else "")
    lines = [
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM; torch {m['torch']}, "
        f"transformers {m['transformers']}; device {dev}; threads {cfg['threads'] or 'torch default'}; {cfg['dtype']}",
        f"Generator: {cfg['generator']} ({_params(cfg['n_params']['generator'])}); critic: {cfg['critic']} "
        f"({_params(cfg['n_params']['critic'])}); prompts of {cfg['prompt_len']} tokens (rows 3/4 to all of "
        f"it, left-padded); {cfg['new_tokens']} new tokens per row, exactly; guided = tilt (beta {cfg['beta']}) over "
        f"the top-K candidates, plain = top-K sampling; {cfg['score_steps']} scoring steps per run; "
        f"{cfg['repeats']} interleaved run(s) per arm; medians.",
        "",
        "| batch | K | plain ms/token | guided ms/token | guided/plain | decode-only guided/plain | tree ms/step | "
        "naive cached ms/step | **naive/tree** | naive cached+crop ms/step | naive full fwd ms/step | full/tree |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['k']} | {r['plain_ms_per_token']:.1f} | {r['guided_ms_per_token']:.1f} | "
            f"{r['guided_over_plain']:.2f}x | {r['guided_over_plain_decode']:.2f}x | {r['tree_ms_per_step']:.1f} | "
            f"{r['naive_cached_ms_per_step']:.1f} | **{r['naive_over_tree']:.2f}x** | "
            f"{r['naive_crop_ms_per_step']:.1f} | {_fmt(r['naive_full_ms_per_step'])} | "
            f"{_fmt(r['naive_full_over_tree'], '.2f', 'x')} |")
    lines += [
        "",
        "ms/token: wall time of one generate call / new tokens (one token per row per step; prefills included). "
        "Decode-only: time per step between the first and the last logits call. Tree / naive: ms per decoding step "
        "(the chosen previous token + K candidates scored); naive cached copies the prefix KV cache per candidate; "
        "naive full forward is timed on "
        f"{cfg['full_forward_candidates']} of the K candidates and scaled to K.",
        "",
        "Goals:",
    ]
    g = result["goals"]
    tree = g["tree_ge_3x_naive_at_k15"]
    if tree.get("met"):
        ratios = {f"batch {r['batch']}": r["naive_over_tree"] for r in rows if r["k"] == TREE_GOAL_K}
        verdict = ", ".join(f"{key}: {ratios[key]:.2f}x, {'met' if ok else 'NOT met'}"
                            for key, ok in tree["met"].items())
        lines.append(f"- {tree['goal']}: {verdict}" + ("" if tree["applies"] else
                                                       f" (measured on {m['device']}; the goal is stated for CPU)"))
    else:
        lines.append(f"- {tree['goal']}: n/a (K = {TREE_GOAL_K} not measured)")
    gpu = g["guided_over_plain_le_1.3_gpu"]
    if gpu["applies"]:
        lines.append(f"- {gpu['goal']}: " + ", ".join(f"{key}: {'met' if ok else 'NOT met'}"
                                                      for key, ok in gpu["met"].items()))
    else:
        lines.append(f"- {gpu['goal']}: n/a on {m['device']} (run with --shape qwen2.5-7b+1.5b on a CUDA machine)")
    share = result.get("foreign_cpu_share")
    if m["device"] == "cpu" and share is not None:
        per = {}
        for r in rows:
            for arm, v in r["foreign_cpu_share"].items():
                if v is not None:
                    per.setdefault(arm, []).append(v)
        txt = ", ".join(f"{ARM_LABELS.get(a, a)} {100 * max(v):.0f}%" for a, v in per.items()) or \
            "calls too short to tell"
        n_bad = sum(len(r.get("discarded_runs", [])) for r in rows)
        lines += ["", f"Other processes' share of the machine's CPU during the kept timed calls (worst (batch, K)): "
                      f"{txt}. Runs discarded as disturbed (share > {100 * cfg['max_foreign']:.0f}%) and measured "
                      f"again: {n_bad}. Over the whole measurement, waits and discarded runs included: "
                      f"{100 * share:.0f}%."]
        if any(max(v) > cfg["max_foreign"] for v in per.values()):
            lines.append("WARNING: the machine was busy with other work during some kept runs; those timings are "
                         "disturbed (re-run on an idle machine, or raise --repeats / --retries).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result dict (also written to ``--output``) and prints a markdown table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve_options(build_parser().parse_args(argv))
    command = "python -m evals.bench_decoding" + ("" if not argv else " " + shlex.join(argv))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _log(args, f"== loading models ({args.shape or args.model or 'embedded default'}, {args.dtype}, {args.device})")
    models = load_models(args)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no per-call generation warnings in the timed loop

    wait = _maybe_wait(args, args.wait_idle, "before measuring")
    start_snap, start = _cpu_snapshot(), time.perf_counter()
    rows, waits = [], []
    for batch in args.batch_sizes:
        for k in args.ks:
            if rows:
                waits.append(_maybe_wait(args, args.wait_idle_each, f"batch {batch}, K {k}"))
            _log(args, f"== batch {batch}, K {k}")
            rows.append(measure_config(args, models, batch, k))
    elapsed = time.perf_counter() - start
    overall_share = foreign_cpu_share(start_snap, _cpu_snapshot())

    config = {k: getattr(args, k) for k in ("mode", "model", "shape", "batch_sizes", "ks", "new_tokens", "prompt_len",
                                            "score_steps", "full_forward_candidates", "repeats", "dtype",
                                            "dtype_requested", "threads",
                                            "device", "beta", "wait_idle", "wait_idle_each", "max_foreign", "retries",
                                            "seed")}
    config.update(generator=models["names"]["generator"], critic=models["names"]["critic"],
                  n_params=models["n_params"], gamma=GAMMA, guided_mode="tilt",
                  sampling="do_sample, temperature 1; plain: top_k=K; guided: the processor's top-K candidates",
                  attn_implementation=getattr(models["generator"].config, "_attn_implementation", None))
    if models["model_configs"]:
        config["model_configs"] = models["model_configs"]
    result = {"benchmark": "lenvm_decoding", "command": command, "machine": machine_info(args.device),
              "config": config, "results": rows, "goals": evaluate_goals(rows, args.device),
              "foreign_cpu_share": overall_share, "measure_s": elapsed, "wait_idle": wait, "wait_idle_each": waits,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result["markdown"] = markdown_table(result)

    return write_result(result, args.output, DEFAULT_OUTPUT)


if __name__ == "__main__":
    main()
