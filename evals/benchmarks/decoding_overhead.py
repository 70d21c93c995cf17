"""Benchmark: the cost of length-guided decoding and of tree scoring, measured side by side in one process on
the same models, prompts and token counts.

* **guided vs plain generation.** ``model.generate`` sampling with the generator alone ("plain", top-k = K)
  against the same call with :class:`lenvm_rl.decoding.LengthGuidedLogitsProcessor` (mode ``tilt``, the top-K
  candidates scored by the critic each step; "guided"). Every call makes exactly ``--new_tokens`` tokens per
  row. Reported: ms per token step (one ``generate`` call / N, prefills included), decode-only ms per step
  (between the first and the last logits call), and guided / plain for both.
* **tree vs naive candidate scoring.** :class:`lenvm_rl.scoring.TreeScorer` (one forward of the chosen previous
  token + K candidates on the cached prefix) against ``naive_cached`` (:class:`lenvm_rl.scoring.NaiveCachedScorer`:
  K 1-token forwards, each on its own copy of the prefix KV cache; the goal's baseline), ``naive_crop`` (the
  same on the prefix cache itself, cropped after each candidate) and ``naive_full``
  (:func:`lenvm_rl.scoring.naive_candidate_values`, full forwards without a cache, timed on
  ``--full_forward_candidates`` of the K and scaled to K). Reported: ms per decoding step and naive / tree; the
  values are compared at the first step (max abs difference) as a sanity check.

Each (batch, K) starts with an unrecorded full-length warm-up of every arm. Arms are interleaved (plain, guided,
guided, plain, ...; the scorers take turns inside every step, in rotating order) and the share of the CPU used
by other processes during each arm's timed calls is recorded. On CPU it first waits (``--wait_idle``) for an
idle machine, and a run disturbed by other processes (over ``--max_foreign`` of the CPU) is measured again.

Models: the embedded SmolLM2-135M-Instruct as generator and, with a random value head, as the critic backbone;
``--shape qwen2.5-7b+1.5b``: random models of real shapes (for a CUDA machine); ``--tiny``: random tiny Llamas.
Goals: tree >= 3x faster than naive per-candidate cached scoring at K = 15 (CPU); guided / plain <= 1.3x
against eager ``generate`` (GPU). Run ``python -m evals.benchmarks.decoding_overhead`` from the repository root.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.decoding_overhead"
DEFAULT_OUTPUT = "evals/results/bench_decoding.json"
GAMMA = 0.99
GEN_ARMS = ("plain", "guided")
SCORE_ARMS = ("tree", "naive_cached", "naive_crop")
ARM_LABELS = {
    "plain": "plain generate",
    "guided": "guided generate",
    "tree": "tree scoring",
    "naive_cached": "naive, per-candidate cached",
    "naive_crop": "naive, cached + crop",
    "naive_full": "naive, full forward",
}
TREE_GOAL, TREE_GOAL_K, GPU_GOAL = 3.0, 15, 1.3
# Randomly initialised (generator, critic) pairs of real shapes (harness.SHAPES); --tiny uses "tiny".
SHAPE_PAIRS = {
    "qwen2.5-7b+1.5b": ("qwen2.5-7b", "qwen2.5-1.5b"),
    "qwen2.5-7b+0.5b": ("qwen2.5-7b", "qwen2.5-0.5b"),
    "qwen2.5-1.5b+0.5b": ("qwen2.5-1.5b", "qwen2.5-0.5b"),
    "tiny": ("tiny-llama", "tiny-llama"),
}
# Defaults per mode; explicit options override them.
MODE_DEFAULTS = {
    "default": dict(
        batch_sizes=[1, 8],
        ks=[5, 15],
        new_tokens=32,
        prompt_len=96,
        score_steps=8,
        repeats=3,
        full_forward_candidates=2,
        wait_idle=900.0,
    ),
    "shape": dict(
        batch_sizes=[1, 8, 32],
        ks=[5, 15],
        new_tokens=32,
        prompt_len=512,
        score_steps=8,
        repeats=3,
        full_forward_candidates=2,
        wait_idle=0.0,
    ),
    "tiny": dict(
        batch_sizes=[1, 2],
        ks=[5, 15],
        new_tokens=4,
        prompt_len=12,
        score_steps=3,
        repeats=1,
        full_forward_candidates=2,
        wait_idle=0.0,
    ),
}


@dataclass
class DecodingBenchOptions(harness.MeasureOptions):
    """Length-guided vs plain decoding (ms per token) and tree vs naive candidate scoring (ms per step), same
    models, prompts and token counts, interleaved in one process. Unset figures take the defaults of the mode
    (default, shape or tiny; MODE_DEFAULTS)."""

    model: str | None = option(
        "Generator and critic backbone (default: the embedded SmolLM2-135M-Instruct); the "
        "critic gets a random value head (its weights do not change the cost)."
    )
    shape: str | None = option(
        "Random generator + critic of built-in shapes (the critic takes the generator's vocabulary).",
        choices=sorted(SHAPE_PAIRS),
    )
    tiny: bool = option("Smoke mode: tiny random Llamas, batch 1 2, prompt 12, 4 new tokens, 3 scoring steps.", False)
    batch_sizes: list[int] | None = option("Batch sizes (default 1 8; shape: 1 8 32).")
    ks: list[int] | None = option("Candidate counts K (default 5 15).")
    new_tokens: int | None = option("Tokens per row and generate call, exactly (default 32).")
    prompt_len: int | None = option("Longest prompt; rows are 3/4 to all of it, left-padded (default 96; shape: 512).")
    score_steps: int | None = option("Decoding steps per scoring run (default 8).")
    full_forward_candidates: int | None = option(
        "Naive full forward: candidates run per step, scaled to K (default 2; 0 skips the arm)."
    )
    repeats: int | None = option("Interleaved runs per arm and (batch, K) (default 3; tiny: 1).")
    beta: float = option("Tilt strength of the guided arm (any finite value costs the same).", 1.0)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)
    mode: str = field(default="default", init=False)

    def __post_init__(self):
        if self.tiny and self.model is None and self.shape is None:
            self.shape = "tiny"
        if self.model is not None and self.shape is not None:
            raise SystemExit("give --model or --shape, not both")
        self.mode = "tiny" if self.tiny or self.shape == "tiny" else ("shape" if self.shape else "default")
        for k, v in MODE_DEFAULTS[self.mode].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        self.resolve_machine()  # wait_idle: 900 by default, 0 with tiny or shape (MODE_DEFAULTS)
        if self.new_tokens < 2 or self.prompt_len < 4:
            raise SystemExit("--new_tokens must be >= 2 (decode-only time needs two steps), --prompt_len >= 4")
        if min(self.batch_sizes + self.ks) < 1 or self.score_steps < 1 or self.repeats < 1:
            raise SystemExit("--batch_sizes, --ks, --score_steps and --repeats must be >= 1")
        if self.full_forward_candidates < 0 or not math.isfinite(self.beta):
            raise SystemExit("--full_forward_candidates must be >= 0, --beta finite")


# ---------------------------------------------------------------------------------------------- models + data
def load_models(o: DecodingBenchOptions) -> dict:
    """Generator (a causal LM), critic (``LengthCritic`` around a ``LengthValueModel``), ids of EOS / pad."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.modeling import LengthValueModel

    dtype = o.torch_dtype()
    torch.manual_seed(o.seed)
    if o.shape:
        gen_shape, critic_shape = SHAPE_PAIRS[o.shape]
        gen_cfg = dict(harness.SHAPES[gen_shape])
        critic_cfg = dict(harness.SHAPES[critic_shape], vocab_size=gen_cfg["vocab_size"])  # every id valid for both
        with torch.device(o.device):  # initialise in place (a 7B model initialised on the CPU takes minutes)
            generator = AutoModelForCausalLM.from_config(harness.config_from_dict(gen_cfg), dtype=dtype)
            backbone = AutoModel.from_config(harness.config_from_dict(critic_cfg), dtype=dtype)
            critic_model = LengthValueModel.from_backbone(backbone, gamma=GAMMA)
        tokenizer, eos, pad = None, gen_cfg["eos_token_id"], gen_cfg.get("pad_token_id", gen_cfg["eos_token_id"])
        names = {"generator": f"{gen_shape} (random init)", "critic": f"{critic_shape} (random init)"}
        model_configs = {"generator": gen_cfg, "critic": critic_cfg}
    else:
        from lenvm_rl.defaults import resolve_model

        path = resolve_model(o.model)
        generator = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        critic_model = LengthValueModel.from_backbone(path, gamma=GAMMA, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        name = o.model or "smollm2-135m-instruct (embedded default)"
        names, model_configs = {"generator": name, "critic": f"{name} backbone + random value head"}, None
    generator = generator.to(o.device).eval().requires_grad_(False)
    critic_model = critic_model.to(o.device)
    special = {i for i in (eos, pad, getattr(generator.config, "bos_token_id", None)) if i is not None}
    return {
        "generator": generator,
        "critic": LengthCritic(critic_model, tokenizer),
        "eos": eos,
        "pad": pad,
        "special": sorted(special),
        "names": names,
        "model_configs": model_configs,
        "vocab_size": min(generator.config.vocab_size, critic_model.config.vocab_size),
        "n_params": {
            "generator": sum(p.numel() for p in generator.parameters()),
            "critic": sum(p.numel() for p in critic_model.parameters()),
        },
    }


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
    lengths = [prompt_len] + torch.randint(
        max(2, (3 * prompt_len) // 4), prompt_len + 1, (batch - 1,), generator=g
    ).tolist()
    ids = random_ids((batch, prompt_len), vocab_size, special, g)
    mask = (torch.arange(prompt_len)[None] >= prompt_len - torch.tensor(lengths)[:, None]).long()
    return ids, mask, lengths


# ---------------------------------------------------------------------------------------------------- the arms
def run_generate(
    models: dict, ids, mask, new_tokens: int, k: int, guided: bool, beta: float, seed: int, device
) -> dict:
    """One ``generate`` call producing exactly ``new_tokens`` tokens per row; returns its timings."""
    import torch
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    from lenvm_rl.decoding import LengthGuidedLogitsProcessor

    class StepClock(LogitsProcessor):  # placed after the guided processor: when each logits call happens
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            harness.sync(device)
            self.times.append(time.perf_counter())
            return scores

    config = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0 if guided else k,
        top_p=1.0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=models["pad"],
        eos_token_id=models["eos"],
    )
    clock = StepClock()
    guide = (
        [
            LengthGuidedLogitsProcessor(
                models["critic"], "tilt", beta=beta, eos_token_id=models["eos"], pad_token_id=models["pad"], top_k=k
            )
        ]
        if guided
        else []
    )
    ids, mask = ids.to(device), mask.to(device)
    torch.manual_seed(seed)
    harness.sync(device)
    t0 = time.perf_counter()
    out = models["generator"].generate(
        input_ids=ids,
        attention_mask=mask,
        generation_config=config,
        logits_processor=LogitsProcessorList(guide + [clock]),
    )
    harness.sync(device)
    total, times = time.perf_counter() - t0, clock.times
    if out.shape[1] - ids.shape[1] != new_tokens or len(times) != new_tokens:
        raise RuntimeError(
            f"generate made {out.shape[1] - ids.shape[1]} tokens in {len(times)} steps, expected exactly {new_tokens}"
        )
    return {
        "total_s": total,
        "ms_per_token": 1e3 * total / new_tokens,
        "first_token_ms": 1e3 * (times[0] - t0),
        "decode_ms_per_step": 1e3 * (times[-1] - times[0]) / (new_tokens - 1),
    }


def run_scoring(
    models: dict,
    ids,
    mask,
    k: int,
    steps: int,
    full_candidates: int,
    seed: int,
    rotate: int,
    timer: harness.Timer,
    device,
    vision: dict | None = None,
) -> dict:
    """One decoding run of ``steps`` steps on the same tokens for every scorer, interleaved step by step.
    ``vision``: the prompts' image inputs for a VLM critic (the scorers cache the image tokens once; the full
    forward reads the images every time)."""
    import torch

    from lenvm_rl.scoring import NaiveCachedScorer, TreeScorer, naive_candidate_values

    model = models["critic"].model
    g = torch.Generator().manual_seed(seed)
    scorers = {
        "tree": TreeScorer(model),
        "naive_cached": NaiveCachedScorer(model, copy=True),
        "naive_crop": NaiveCachedScorer(model, copy=False),
    }
    vision = {key: v.to(device) for key, v in (vision or {}).items()}
    for s in scorers.values():  # as the guided processor does: the last prompt token is step 0's "previous"
        s.start(ids[:, :-1], mask[:, :-1], **vision)
    prefix_ids, prefix_mask = ids.to(device), mask.to(device)  # for the full forward: prompt + chosen tokens so far
    previous = ids[:, -1]
    times = {arm: [] for arm in scorers}
    full_ms, diffs = None, {}
    for t in range(steps):
        candidates = random_ids((ids.shape[0], k), models["vocab_size"], models["special"], g)
        arms = list(scorers)[(t + rotate) % len(scorers) :] + list(scorers)[: (t + rotate) % len(scorers)]
        values = {}
        for arm in arms:
            (_, v), dt = timer(arm, scorers[arm].step, previous, candidates)
            times[arm].append(1e3 * dt)
            values[arm] = v.float().cpu()
        if t == 0:
            diffs = {
                f"{arm}_vs_tree": float((v - values["tree"]).abs().max()) for arm, v in values.items() if arm != "tree"
            }
            if full_candidates:
                j = min(full_candidates, k)
                v, dt = timer(
                    "naive_full",
                    naive_candidate_values,
                    model,
                    prefix_ids,
                    prefix_mask,
                    candidates[:, :j].to(device),
                    **vision,
                )
                full_ms = 1e3 * dt * k / j
                diffs["naive_full_vs_tree"] = float((v.float().cpu() - values["tree"][:, :j]).abs().max())
        previous = candidates[:, 0]
        prefix_ids = torch.cat([prefix_ids, previous[:, None].to(device)], 1)
        prefix_mask = torch.cat([prefix_mask, torch.ones_like(prefix_mask[:, :1])], 1)
    return {"step_ms": times, "naive_full_ms_per_step": full_ms, "max_abs_diff": diffs}


def measure_config(o: DecodingBenchOptions, models: dict, batch: int, k: int) -> dict:
    """All arms for one (batch, K): a warm-up, then ``repeats`` interleaved rounds (plain, guided, scoring;
    guided first in every other round); disturbed runs are measured again."""
    ids, mask, lengths = make_prompts(batch, o.prompt_len, models["vocab_size"], models["special"], o.seed)
    dev, tag, log = o.device, f"B={batch} K={k}", lambda msg: harness.log(o.quiet, msg)
    # Warm-up (not recorded), at full length: first calls allocate memory for these shapes and pick kernels (on an
    # H200 the first full-length call of each shape was up to 3x slower than the next after a 2-token warm-up).
    for guided in (False, True):
        run_generate(models, ids, mask, o.new_tokens, k, guided, o.beta, o.seed, dev)
    run_scoring(
        models,
        ids,
        mask,
        k,
        min(2, o.score_steps),
        min(1, o.full_forward_candidates),
        o.seed,
        0,
        harness.Timer(dev),
        dev,
    )

    def generate_once(arm: str, r: int) -> dict:
        timer = harness.Timer(dev)
        res, _ = timer(arm, run_generate, models, ids, mask, o.new_tokens, k, arm == "guided", o.beta, o.seed + r, dev)
        return {**res, "cpu": timer.counts[arm], "foreign_cpu_share": harness.share_of([timer.counts[arm]])}

    def score_once(r: int) -> dict:
        timer = harness.Timer(dev)
        res = run_scoring(
            models, ids, mask, k, o.score_steps, o.full_forward_candidates, o.seed + 1000 + r, r, timer, dev
        )
        return {**res, "cpu": timer.counts, "foreign_cpu_share": harness.share_of(timer.counts.values())}

    def measure(what: str, fn) -> tuple[dict, list[dict]]:
        return harness.measure_with_retries(
            fn, what, o.retries, o.max_foreign if dev == "cpu" else None, max(o.wait_idle_each, 10.0), o.quiet
        )

    gen_runs, score_runs, order, discarded = {arm: [] for arm in GEN_ARMS}, [], [], []
    for r in range(o.repeats):
        arms = list(GEN_ARMS) if r % 2 == 0 else list(reversed(GEN_ARMS))
        order.append("+".join(arms))
        for arm in arms:
            t0 = time.perf_counter()
            res, bad = measure(f"{tag} run {r + 1} {arm}", lambda arm=arm, r=r: generate_once(arm, r))
            gen_runs[arm].append(res)
            discarded += [{"arm": arm, "repeat": r, **b} for b in bad]
            log(
                f"   {tag} run {r + 1}/{o.repeats} {arm}: {res['ms_per_token']:.1f} ms/token "
                f"(decode {res['decode_ms_per_step']:.1f} ms/step, {time.perf_counter() - t0:.1f} s)"
            )
        res, bad = measure(f"{tag} run {r + 1} scoring", lambda r=r: score_once(r))
        score_runs.append(res)
        discarded += [{"arm": "scoring", "repeat": r, **b} for b in bad]
        full = res["naive_full_ms_per_step"]
        log(
            f"   {tag} run {r + 1}/{o.repeats} scoring: "
            + ", ".join(f"{arm} {statistics.median(v):.1f}" for arm, v in res["step_ms"].items())
            + (f", naive_full {full:.1f}" if full else "")
            + " ms/step"
        )
    return summarize_config(batch, k, lengths, gen_runs, score_runs, order, discarded)


# ---------------------------------------------------------------------------------------------------- summary
def summarize_config(batch, k, lengths, gen_runs, score_runs, order, discarded) -> dict:
    med = statistics.median
    shares = {arm: harness.share_of([g["cpu"] for g in gen_runs[arm]]) for arm in GEN_ARMS}  # over the kept runs
    row = {"batch": batch, "k": k, "prompt_lengths": lengths, "order": order}
    for arm in GEN_ARMS:
        for key in ("ms_per_token", "decode_ms_per_step", "first_token_ms"):
            row[f"{arm}_{key}"] = med(r[key] for r in gen_runs[arm])
    row["guided_over_plain"] = row["guided_ms_per_token"] / row["plain_ms_per_token"]
    row["guided_over_plain_decode"] = row["guided_decode_ms_per_step"] / row["plain_decode_ms_per_step"]
    row["guided_over_plain_paired"] = med(
        g["ms_per_token"] / p["ms_per_token"] for g, p in zip(gen_runs["guided"], gen_runs["plain"])
    )
    row.update(summarize_scoring(score_runs))
    shares.update(row.pop("foreign_cpu_share"))
    row.update(foreign_cpu_share=shares, runs={"generate": gen_runs, "scoring": score_runs}, discarded_runs=discarded)
    return row


def summarize_scoring(score_runs: list[dict], extra_arms: tuple[str, ...] = ()) -> dict:
    """Medians over the scoring runs of ``run_scoring``: ms per step of each arm, naive / tree (from the medians
    and paired per step), the largest value differences, and other processes' CPU share per arm (``extra_arms``:
    more timer arms to report)."""
    med, row = statistics.median, {}
    for arm in SCORE_ARMS:
        row[f"{arm}_ms_per_step"] = med(x for r in score_runs for x in r["step_ms"][arm])
    fulls = [r["naive_full_ms_per_step"] for r in score_runs if r["naive_full_ms_per_step"] is not None]
    row["naive_full_ms_per_step"] = med(fulls) if fulls else None
    tree = row["tree_ms_per_step"]
    row["naive_over_tree"] = row["naive_cached_ms_per_step"] / tree
    row["naive_crop_over_tree"] = row["naive_crop_ms_per_step"] / tree
    row["naive_full_over_tree"] = row["naive_full_ms_per_step"] / tree if fulls else None
    row["naive_over_tree_paired"] = med(
        n / t for r in score_runs for n, t in zip(r["step_ms"]["naive_cached"], r["step_ms"]["tree"])
    )
    row["max_abs_diff"] = {
        key: max(r["max_abs_diff"].get(key, 0.0) for r in score_runs) for key in score_runs[0]["max_abs_diff"]
    }
    row["foreign_cpu_share"] = {
        arm: harness.share_of([s["cpu"].get(arm) for s in score_runs])
        for arm in SCORE_ARMS + ("naive_full",) + extra_arms
        if any(arm in s["cpu"] for s in score_runs)
    }
    return row


def evaluate_goals(rows: list[dict], device: str) -> dict:
    tree = {f"batch {r['batch']}": r["naive_over_tree"] >= TREE_GOAL for r in rows if r["k"] == TREE_GOAL_K}
    goals = {
        "tree_ge_3x_naive_at_k15": {
            "goal": f"naive per-candidate cached / tree >= {TREE_GOAL} at K = {TREE_GOAL_K} (CPU)",
            "applies": device == "cpu" and bool(tree),
            "met": tree or None,
            "all_met": all(tree.values()) if tree else None,
        },
        "guided_over_plain_le_1.3_gpu": {
            "goal": f"guided / plain <= {GPU_GOAL} vs eager generate (GPU)",
            "applies": device == "cuda",
        },
    }
    if device == "cuda":
        gpu = {f"batch {r['batch']}, K {r['k']}": r["guided_over_plain"] <= GPU_GOAL for r in rows}
        goals["guided_over_plain_le_1.3_gpu"].update(met=gpu, all_met=all(gpu.values()))
    return goals


def markdown(result: dict) -> str:
    m, cfg, rows, g = result["machine"], result["config"], result["results"], result["goals"]
    params = {
        role: (f"{n / 1e9:.2f} B params" if n >= 1e9 else f"{n / 1e6:.3g} M params")
        for role, n in cfg["n_params"].items()
    }
    lines = harness.markdown_head(result, cfg["threads"], f"; {cfg['dtype']}") + [
        f"Generator: {cfg['generator']} ({params['generator']}); critic: {cfg['critic']} ({params['critic']}); "
        f"prompts of {cfg['prompt_len']} tokens (rows 3/4 to all of it, left-padded); {cfg['new_tokens']} new "
        f"tokens per row, exactly; guided = tilt (beta {cfg['beta']}) over the top-K candidates, plain = top-K "
        f"sampling; {cfg['score_steps']} scoring steps per run; {cfg['repeats']} interleaved run(s) per arm; medians.",
        "",
    ]
    lines += harness.markdown_table(
        [
            "batch",
            "K",
            "plain ms/token",
            "guided ms/token",
            "guided/plain",
            "decode-only guided/plain",
            "tree ms/step",
            "naive cached ms/step",
            "**naive/tree**",
            "naive cached+crop ms/step",
            "naive full fwd ms/step",
            "full/tree",
        ],
        [
            [
                r["batch"],
                r["k"],
                f"{r['plain_ms_per_token']:.1f}",
                f"{r['guided_ms_per_token']:.1f}",
                f"{r['guided_over_plain']:.2f}x",
                f"{r['guided_over_plain_decode']:.2f}x",
                f"{r['tree_ms_per_step']:.1f}",
                f"{r['naive_cached_ms_per_step']:.1f}",
                f"**{r['naive_over_tree']:.2f}x**",
                f"{r['naive_crop_ms_per_step']:.1f}",
                "n/a" if r["naive_full_ms_per_step"] is None else f"{r['naive_full_ms_per_step']:.1f}",
                "n/a" if r["naive_full_over_tree"] is None else f"{r['naive_full_over_tree']:.2f}x",
            ]
            for r in rows
        ],
    )
    lines += [
        "",
        "ms/token: wall time of one generate call / new tokens (one token per row per step; prefills "
        "included). Decode-only: time per step between the first and the last logits call. Tree / naive: ms "
        "per decoding step (the chosen previous token + K candidates scored); naive cached copies the prefix KV "
        f"cache per candidate; naive full forward is timed on {cfg['full_forward_candidates']} of the K "
        "candidates and scaled to K.",
        "",
        "Goals:",
    ]
    tree, gpu = g["tree_ge_3x_naive_at_k15"], g["guided_over_plain_le_1.3_gpu"]
    if tree.get("met"):
        ratios = {f"batch {r['batch']}": r["naive_over_tree"] for r in rows if r["k"] == TREE_GOAL_K}
        verdict = ", ".join(
            f"{key}: {ratios[key]:.2f}x, {'met' if ok else 'NOT met'}" for key, ok in tree["met"].items()
        )
        lines.append(
            f"- {tree['goal']}: {verdict}"
            + ("" if tree["applies"] else f" (measured on {m['device']}; the goal is stated for CPU)")
        )
    else:
        lines.append(f"- {tree['goal']}: n/a (K = {TREE_GOAL_K} not measured)")
    if gpu["applies"]:
        lines.append(
            f"- {gpu['goal']}: " + ", ".join(f"{key}: {'met' if ok else 'NOT met'}" for key, ok in gpu["met"].items())
        )
    else:
        lines.append(f"- {gpu['goal']}: n/a on {m['device']} (run with --shape qwen2.5-7b+1.5b on a CUDA machine)")
    if m["device"] == "cpu" and result.get("foreign_cpu_share") is not None:
        lines += harness.foreign_share_lines(
            result,
            ARM_LABELS,
            cfg["max_foreign"],
            f" Runs discarded as disturbed (share > "
            f"{100 * cfg['max_foreign']:.0f}%) and measured again: {sum(len(r.get('discarded_runs', [])) for r in rows)}.",
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result dict (also written to ``--output``) and prints a markdown table."""
    argv, o = harness.start_run(DecodingBenchOptions, argv, MODULE)
    from transformers.utils import logging as hf_logging

    harness.log(o.quiet, f"== loading models ({o.shape or o.model or 'embedded default'}, {o.dtype}, {o.device})")
    models = load_models(o)
    hf_logging.set_verbosity_error()  # no per-call generation warnings in the timed loop

    grid = harness.measure_grid(
        o.batch_sizes,
        o.ks,
        lambda batch, k: measure_config(o, models, batch, k),
        o.wait_idle,
        o.wait_idle_each,
        o.quiet,
    )
    rows = grid.pop("rows")
    config = {k: v for k, v in asdict(o).items() if k not in ("tiny", "output", "quiet")}
    config.update(
        generator=models["names"]["generator"],
        critic=models["names"]["critic"],
        n_params=models["n_params"],
        gamma=GAMMA,
        guided_mode="tilt",
        sampling="do_sample, temperature 1; plain: top_k=K; guided: the processor's top-K candidates",
        attn_implementation=getattr(models["generator"].config, "_attn_implementation", None),
    )
    if models["model_configs"]:
        config["model_configs"] = models["model_configs"]
    result = {
        "benchmark": "lenvm_decoding",
        "command": harness.command_line(MODULE, argv),
        "machine": harness.machine_info(o.device),
        "config": config,
        "results": rows,
        "goals": evaluate_goals(rows, o.device),
        **grid,
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


if __name__ == "__main__":
    main()
