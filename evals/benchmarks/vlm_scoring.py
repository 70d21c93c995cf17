"""Benchmark: tree scoring of candidate tokens by a vision-language LenVM whose prefix holds image tokens, against
one-by-one scoring, measured side by side in one process on the same model, prompts, images and candidates.

Each prompt row is text, one image (``<|vision_start|>``, the image tokens, ``<|vision_end|>``) and more text,
left-padded. The critic is a random-weight Qwen2.5-VL-shaped LenVM built from a config (no hub): the vision tower
reads the image once, when the scorers cache the prompt; candidates then come after the image tokens, with
Qwen2.5-VL's 3-D positions continuing from the image's. Arms per decoding step (the chosen previous token + K
candidates):

* ``tree``: :class:`lenvm_rl.scoring.TreeScorer`, one forward of previous + K candidates on the cached prefix.
* ``naive_cached``: :class:`lenvm_rl.scoring.NaiveCachedScorer` (copy): K 1-token forwards, each on its own copy
  of the prefix KV cache (per-candidate requests).
* ``naive_crop``: the same on the prefix cache itself, cropped after each candidate.
* ``naive_full``: :func:`lenvm_rl.scoring.naive_candidate_values` with the images, K separate full forwards of
  prefix + candidate (vision tower included), timed on ``--full_forward_candidates`` of the K and scaled to K.

Reported: ms per step, naive / tree (the ratio, from the medians and per step), the one-off prefill (vision tower
+ prefix into the cache) and the largest value difference between each naive arm and the tree at the first step.
The scorers take turns inside every step in rotating order; on CPU the run first waits (``--wait_idle``) for an
idle machine and a run disturbed by other processes (over ``--max_foreign`` of the CPU) is measured again.

    python -m evals.benchmarks.vlm_scoring            # small Qwen2.5-VL shape, CPU (a few minutes)
    python -m evals.benchmarks.vlm_scoring --tiny     # seconds: a tiny shape, few steps (the test runs this)
    python -m evals.benchmarks.vlm_scoring --shape qwen2.5-vl-3b   # Qwen2.5-VL-3B's shape, for a CUDA machine
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

from evals.benchmarks import harness
from evals.benchmarks.decoding_overhead import ARM_LABELS, random_ids, run_scoring, summarize_scoring
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.vlm_scoring"
DEFAULT_OUTPUT = "evals/results/bench_vlm_scoring.json"
GAMMA = 0.99
# Qwen2.5-VL's special ids (its tokenizer's): every id from FIRST_SPECIAL on is special; candidates stay below it.
BOS, EOS, VISION_START, VISION_END, IMAGE, VIDEO, FIRST_SPECIAL = 151643, 151645, 151652, 151653, 151655, 151656, 151643
PATCH, MERGE, TEMPORAL = 14, 2, 2


def qwen2_5_vl_shape(layers: int, hidden: int, intermediate: int, heads: int, mrope: list[int], vision: dict) -> dict:
    """A Qwen2.5-VL config dict (harness.config_from_dict) with Qwen2.5-VL's ids and patching: a language model of
    ``layers`` x ``hidden`` (2 KV heads, 3-D rotary sections ``mrope``) and a vision tower of ``vision``'s sizes
    that feeds it."""
    return dict(
        model_type="qwen2_5_vl",
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        text_config=dict(
            vocab_size=151936,
            max_position_embeddings=32768,
            bos_token_id=BOS,
            eos_token_id=EOS,
            tie_word_embeddings=True,
            rms_norm_eps=1e-6,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        ),
        vision_config=dict(
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
            in_chans=3,
            hidden_act="silu",
            out_hidden_size=hidden,
            **vision,
        ),
    )


# Random-weight Qwen2.5-VL shapes; the LenVM drops the LM head.
SHAPES: dict[str, dict] = {
    "tiny": qwen2_5_vl_shape(
        2,
        64,
        128,
        4,
        [4, 2, 2],
        dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, window_size=56, fullatt_block_indexes=[0]),
    ),
    "small": qwen2_5_vl_shape(
        8,
        512,
        1408,
        8,
        [8, 12, 12],
        dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, window_size=112, fullatt_block_indexes=[3]),
    ),
    "qwen2.5-vl-3b": qwen2_5_vl_shape(
        36,
        2048,
        11008,
        16,
        [16, 24, 24],
        dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
    ),
}
# Defaults per mode; explicit options override them.
MODE_DEFAULTS = {
    "default": dict(
        shape="small",
        batch_sizes=[1, 4],
        ks=[5, 15],
        image_size=448,
        text_len=64,
        score_steps=8,
        repeats=3,
        full_forward_candidates=2,
        wait_idle=900.0,
        retries=2,
    ),
    "tiny": dict(
        shape="tiny",
        batch_sizes=[1, 2],
        ks=[4],
        image_size=112,
        text_len=12,
        score_steps=3,
        repeats=1,
        full_forward_candidates=2,
        wait_idle=0.0,
        retries=0,
    ),
}


@dataclass
class VlmScoringBenchOptions(harness.MeasureOptions):
    """Tree vs one-by-one candidate scoring by a vision-language LenVM over prompts that hold an image (ms per
    decoding step, naive / tree), interleaved in one process. Unset figures take the defaults of the mode (default
    or tiny; MODE_DEFAULTS)."""

    shape: str | None = option(
        "Random-weight Qwen2.5-VL shape of the critic (default small; tiny with --tiny).", choices=sorted(SHAPES)
    )
    tiny: bool = option(
        "Smoke mode: the tiny shape, batch 1 2, K 4, a 112-pixel image (16 image tokens), 3 steps.", False
    )
    batch_sizes: list[int] | None = option("Batch sizes (default 1 4).")
    ks: list[int] | None = option("Candidate counts K (default 5 15).")
    image_size: int | None = option(
        "Side of each row's square image in pixels, a multiple of 28; the prefix holds "
        "(image_size / 28) ** 2 image tokens (default 448: 256 tokens)."
    )
    text_len: int | None = option(
        "Text tokens before the image in the longest row (rows 1/2 to all of it, "
        "left-padded); a quarter of it follows the image (default 64)."
    )
    score_steps: int | None = option("Decoding steps per scoring run (default 8).")
    full_forward_candidates: int | None = option(
        "Naive full forward: candidates run per step, scaled to K (default 2; 0 skips the arm)."
    )
    repeats: int | None = option("Interleaved runs per (batch, K) (default 3; tiny: 1).")
    output: str = option("JSON result path.", DEFAULT_OUTPUT)
    mode: str = field(default="default", init=False)

    def __post_init__(self):
        self.mode = "tiny" if self.tiny else "default"
        for k, v in MODE_DEFAULTS[self.mode].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        self.resolve_machine()  # tiny: no idle wait, no retries (MODE_DEFAULTS)
        if self.image_size < PATCH * MERGE or self.image_size % (PATCH * MERGE):
            raise SystemExit(
                f"--image_size must be a positive multiple of {PATCH * MERGE} (patch {PATCH} x merge "
                f"{MERGE}), got {self.image_size}"
            )
        if self.text_len < 4 or min(self.batch_sizes + self.ks) < 1 or self.score_steps < 1 or self.repeats < 1:
            raise SystemExit("--text_len must be >= 4; --batch_sizes, --ks, --score_steps and --repeats >= 1")
        if self.full_forward_candidates < 0:
            raise SystemExit("--full_forward_candidates must be >= 0")


# ---------------------------------------------------------------------------------------------- model + data
def load_critic(o: VlmScoringBenchOptions) -> dict:
    """The critic (a ``LengthCritic`` around a random Qwen2.5-VL-shaped LenVM) and what run_scoring needs."""
    import torch
    from transformers import AutoModelForImageTextToText

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.modeling import LengthValueModel

    torch.manual_seed(o.seed)
    with torch.device(o.device):  # initialise in place (a 3B model initialised on the CPU takes minutes)
        vlm = AutoModelForImageTextToText.from_config(harness.config_from_dict(SHAPES[o.shape]), dtype=o.torch_dtype())
    lenvm = LengthValueModel.from_backbone(vlm, gamma=GAMMA).to(o.device).eval()
    return {
        "critic": LengthCritic(lenvm),
        "vocab_size": FIRST_SPECIAL,
        "special": [BOS, EOS],
        "n_params": sum(p.numel() for p in lenvm.parameters()),
        "attn_implementation": getattr(lenvm.config, "_attn_implementation", None),
    }


def make_prompts(batch: int, text_len: int, image_size: int, seed: int):
    """Left-padded rows ``text, <|vision_start|>, image tokens, <|vision_end|>, text`` with one random image each
    (the pixel patches the Qwen2.5-VL processor would give); returns ``(ids, mask, vision, info)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    grid = image_size // PATCH
    n_image = grid * grid // MERGE**2
    after = max(2, text_len // 4)
    before = [text_len] + torch.randint(text_len // 2, text_len + 1, (batch - 1,), generator=g).tolist()
    rows = [
        random_ids((n,), FIRST_SPECIAL, [BOS, EOS], g).tolist()
        + [VISION_START]
        + [IMAGE] * n_image
        + [VISION_END]
        + random_ids((after,), FIRST_SPECIAL, [BOS, EOS], g).tolist()
        for n in before
    ]
    width = max(map(len, rows))
    ids = torch.full((batch, width), BOS, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :], mask[i, width - len(row) :] = torch.tensor(row), 1
    vision = {
        "pixel_values": torch.randn(batch * grid * grid, 3 * TEMPORAL * PATCH * PATCH, generator=g),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * batch),
    }
    return ids, mask, vision, {"prompt_lengths": [len(r) for r in rows], "image_tokens": n_image}


def time_prefill(critic, ids, mask, vision, timer: harness.Timer) -> float:
    """ms of one ``TreeScorer.start``: the vision tower and the prefix into the cache, paid once per prompt."""
    from lenvm_rl.scoring import TreeScorer

    _, dt = timer("prefill", TreeScorer(critic.model).start, ids[:, :-1], mask[:, :-1], **vision)
    return 1e3 * dt


# ---------------------------------------------------------------------------------------------------- measure
def measure_config(o: VlmScoringBenchOptions, models: dict, batch: int, k: int) -> dict:
    """All arms for one (batch, K): a warm-up, then ``repeats`` runs of ``score_steps`` interleaved steps."""
    ids, mask, vision, info = make_prompts(batch, o.text_len, o.image_size, o.seed)  # the tower casts the pixels
    dev, tag = o.device, f"B={batch} K={k}"
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
        vision,
    )  # warm-up, not recorded
    time_prefill(
        models["critic"], ids.to(dev), mask.to(dev), {key: v.to(dev) for key, v in vision.items()}, harness.Timer(dev)
    )

    def score_once(r: int) -> dict:
        timer = harness.Timer(dev)
        res = run_scoring(
            models, ids, mask, k, o.score_steps, o.full_forward_candidates, o.seed + 1000 + r, r, timer, dev, vision
        )
        res["prefill_ms"] = time_prefill(
            models["critic"], ids.to(dev), mask.to(dev), {key: v.to(dev) for key, v in vision.items()}, timer
        )
        return {**res, "cpu": timer.counts, "foreign_cpu_share": harness.share_of(timer.counts.values())}

    runs, discarded = [], []
    for r in range(o.repeats):
        t0 = time.perf_counter()
        res, bad = harness.measure_with_retries(
            lambda r=r: score_once(r),
            f"{tag} run {r + 1}",
            o.retries,
            o.max_foreign if dev == "cpu" else None,
            max(o.wait_idle_each, 10.0),
            o.quiet,
        )
        runs.append(res)
        discarded += [{"repeat": r, **b} for b in bad]
        full = res["naive_full_ms_per_step"]
        harness.log(
            o.quiet,
            f"   {tag} run {r + 1}/{o.repeats}: "
            + ", ".join(f"{arm} {statistics.median(v):.1f}" for arm, v in res["step_ms"].items())
            + (f", naive_full {full:.1f}" if full else "")
            + f" ms/step ({time.perf_counter() - t0:.1f} s)",
        )
    return summarize(batch, k, info, runs, discarded)


def summarize(batch: int, k: int, info: dict, runs: list[dict], discarded: list[dict]) -> dict:
    return {
        "batch": batch,
        "k": k,
        **info,
        **summarize_scoring(runs, ("prefill",)),
        "prefill_ms": statistics.median(r["prefill_ms"] for r in runs),
        "runs": runs,
        "discarded_runs": discarded,
    }


def markdown(result: dict) -> str:
    cfg, rows = result["config"], result["results"]
    lines = harness.markdown_head(result, cfg["threads"], f"; {cfg['dtype']}") + [
        f"Critic: random-weight Qwen2.5-VL shape '{cfg['shape']}' ({cfg['n_params'] / 1e6:.3g} M params, LM head "
        f"dropped) + value head; each row: up to {cfg['text_len']} text tokens, one {cfg['image_size']}x"
        f"{cfg['image_size']} image ({rows[0]['image_tokens']} image tokens), text; {cfg['score_steps']} scoring "
        f"steps per run; {cfg['repeats']} run(s); medians.",
        "",
    ]
    lines += harness.markdown_table(
        [
            "batch",
            "K",
            "prefix tokens",
            "prefill ms",
            "tree ms/step",
            "naive cached ms/step",
            "**naive/tree**",
            "naive cached+crop ms/step",
            "crop/tree",
            "naive full fwd ms/step",
            "full/tree",
            "max abs diff",
        ],
        [
            [
                r["batch"],
                r["k"],
                max(r["prompt_lengths"]),
                f"{r['prefill_ms']:.1f}",
                f"{r['tree_ms_per_step']:.1f}",
                f"{r['naive_cached_ms_per_step']:.1f}",
                f"**{r['naive_over_tree']:.2f}x**",
                f"{r['naive_crop_ms_per_step']:.1f}",
                f"{r['naive_crop_over_tree']:.2f}x",
                "n/a" if r["naive_full_ms_per_step"] is None else f"{r['naive_full_ms_per_step']:.1f}",
                "n/a" if r["naive_full_over_tree"] is None else f"{r['naive_full_over_tree']:.2f}x",
                f"{max(r['max_abs_diff'].values()):.1e}",
            ]
            for r in rows
        ],
    )
    lines += [
        "",
        "Per decoding step: the chosen previous token + K candidates scored after the cached prefix (text "
        "and image tokens). Tree: one forward; naive cached: K 1-token forwards, each on its own copy of the "
        "prefix KV cache; naive cached+crop: the same on the prefix cache, cropped after each; naive full "
        "forward: prefix + candidate with the images, K times (timed on "
        f"{cfg['full_forward_candidates']} and scaled to K). Prefill: the vision tower and the prefix into the "
        "cache, once per prompt (not in the per-step figures). Max abs diff: naive vs tree values at the first step.",
    ]
    if result["machine"]["device"] == "cpu":
        lines += harness.foreign_share_lines(result, ARM_LABELS, cfg["max_foreign"])
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result dict (also written to ``--output``) and prints a markdown table."""
    argv, o = harness.start_run(VlmScoringBenchOptions, argv, MODULE)
    harness.log(o.quiet, f"== building the critic (Qwen2.5-VL shape {o.shape}, {o.dtype}, {o.device})")
    models = load_critic(o)
    grid = harness.measure_grid(
        o.batch_sizes,
        o.ks,
        lambda batch, k: measure_config(o, models, batch, k),
        o.wait_idle,
        o.wait_idle_each,
        o.quiet,
    )
    rows = grid.pop("rows")
    config = {key: v for key, v in asdict(o).items() if key not in ("tiny", "output", "quiet")}
    config.update(
        model_config=SHAPES[o.shape],
        n_params=models["n_params"],
        gamma=GAMMA,
        attn_implementation=models["attn_implementation"],
    )
    result = {
        "benchmark": "lenvm_vlm_scoring",
        "command": harness.command_line(MODULE, argv),
        "machine": harness.machine_info(o.device),
        "config": config,
        "results": rows,
        **grid,
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


if __name__ == "__main__":
    main()
