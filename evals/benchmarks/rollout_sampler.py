"""Benchmark: completions per second of the rollout samplers, side by side in one process.

    hf              padded batches through ``model.generate``: a batch runs until its longest row ends
    hf_continuous   transformers' continuous batching (``generate_batch``): a finished row's slot takes the
                    next prompt at once

Both sample the same prompts (the quickstart's built-in prompts, spread over its categories) with the same
settings (T 0.7, top-p 0.9, the same cap and rows at once), so their answers come from the same distribution;
the result says how close their lengths are (mean, finished share, the two-sample Kolmogorov-Smirnov distance).
Arms alternate (hf, continuous, continuous, hf, ...), each repeat with its own seed; every call loads the model,
in both arms. The figure is total completions / total seconds per arm, and continuous / hf.

    python -m evals.benchmarks.rollout_sampler           # the embedded default, CPU
    python -m evals.benchmarks.rollout_sampler --tiny    # seconds: a tiny random model
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.rollout_sampler"
DEFAULT_OUTPUT = "evals/results/bench_rollout_sampler.json"
ARMS = ("hf", "hf_continuous")
CATEGORIES = ("one_word", "yes_no", "short_fact", "list", "explain", "steps", "story")  # the quickstart's


@dataclass
class SamplerBenchOptions:
    """Completions per second of the padded-batch and the continuous-batching rollout samplers."""

    model: str | None = option("Generator (default: the embedded SmolLM2-135M-Instruct).")
    prompts: int = option("Built-in prompts, spread over the quickstart's categories.", 32)
    samples: int = option("Completions per prompt.", 2)
    max_new_tokens: int = option("Completion cap (the quickstart's: 256).", 256)
    batch_size: int = option("Rows at once, in both arms.", 16)
    repeats: int = option("Runs per arm (seeds 0, 1, ...).", 2)
    threads: int = option("torch threads.", 2)
    tiny: bool = option("Smoke mode: a tiny random model, 4 prompts x 2, 8 new tokens, 1 repeat.", False)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)

    def __post_init__(self):
        if self.tiny:
            self.prompts, self.samples, self.max_new_tokens, self.repeats, self.batch_size = 4, 2, 8, 1, 4


def spread_prompts(n: int, seed: int = 0) -> list[dict]:
    """``n`` built-in prompts taken in turn from each quickstart category (seeded)."""
    from lenvm_rl.evaluation.common import take_in_turn
    from lenvm_rl.rollouts import load_prompts

    rng = random.Random(seed)
    by_cat = {c: [p for p in load_prompts("builtin") if p.get("category") == c] for c in CATEGORIES}
    return take_in_turn([rng.sample(v, len(v))[::-1] for v in by_cat.values() if v], n)  # [::-1]: the draw as committed


def ks_distance(a: list[int], b: list[int]) -> float:
    """The largest gap between the two samples' empirical CDFs (0 = the same lengths)."""
    xs = sorted(set(a) | set(b))
    return max(abs(sum(x <= t for x in a) / len(a) - sum(x <= t for x in b) / len(b)) for t in xs)


def tiny_model(tmp: str) -> str:
    """A tiny random Llama with the default's tokenizer, allowed 15 words and EOS (so rows end at varied lengths)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lenvm_rl.defaults import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config)
    allowed = set(range(1000, 1015)) | {tokenizer.eos_token_id}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in allowed]
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp


def markdown(result: dict) -> str:
    rows = [
        [
            arm,
            f"{s['completions_per_s']:.2f}",
            f"{s['tokens_per_s']:.1f}",
            f"{s['mean_tokens']:.1f}",
            f"{100 * s['finished']:.0f} %",
            f"{s['foreign_cpu_share'] if s['foreign_cpu_share'] is None else round(100 * s['foreign_cpu_share'])} %",
        ]
        for arm, s in result["arms"].items()
    ]
    lines = harness.markdown_head(result, result["threads"])
    lines += [""] + harness.markdown_table(
        ["sampler", "completions / s", "tokens / s", "mean tokens", "finished", "others' CPU share"], rows
    )
    lines += [
        "",
        f"continuous / hf: **{result['continuous_over_hf']:.2f}x** completions per second (goal >= 2x); "
        f"length distributions: KS distance {result['ks_distance']:.3f} over {result['completions_per_arm']} "
        "completions per arm.",
    ]
    lines += harness.busy_warning([s["foreign_cpu_share"] for s in result["arms"].values()], 0.1, "nothing else")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    o = harness.parse_options(SamplerBenchOptions, argv, f"python -m {MODULE}")
    import torch

    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rollouts import SamplingConfig, generate_rollouts

    torch.set_num_threads(o.threads)
    prompts = spread_prompts(o.prompts)
    seconds = {arm: 0.0 for arm in ARMS}
    records = {arm: [] for arm in ARMS}
    spans = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="bench_sampler_") as tmp:
        model = o.model or (tiny_model(tmp + "/model") if o.tiny else resolve_model(None))
        for r in range(o.repeats):
            order = ARMS if r % 2 == 0 else ARMS[::-1]
            for arm in order:
                out = Path(tmp) / f"{arm}_{r}.jsonl"
                sampling = SamplingConfig(o.samples, o.max_new_tokens, temperature=0.7, top_p=0.9, seed=r)
                before, t0 = harness.cpu_snapshot(), time.perf_counter()
                generate_rollouts(prompts, out, model, sampling, o.batch_size, backend=arm, progress=False)
                seconds[arm] += time.perf_counter() - t0
                after = harness.cpu_snapshot()
                spans[arm].append(None if before is None or after is None else [y - x for x, y in zip(before, after)])
                records[arm] += [json.loads(line) for line in out.read_text().splitlines()]
                harness.log(False, f"[rollout_sampler] repeat {r} {arm}: {seconds[arm]:.1f} s so far")
    arms = {}
    for arm in ARMS:
        lengths = [rec["num_tokens"] for rec in records[arm]]
        arms[arm] = {
            "seconds": seconds[arm],
            "completions": len(lengths),
            "completions_per_s": len(lengths) / seconds[arm],
            "tokens_per_s": sum(lengths) / seconds[arm],
            "mean_tokens": sum(lengths) / len(lengths),
            "finished": sum(rec["finish_reason"] == "stop" for rec in records[arm]) / len(lengths),
            "foreign_cpu_share": harness.share_of(spans[arm]),
            "lengths": lengths,
        }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "command": harness.command_line(MODULE, argv),
        "model": model if o.model or not o.tiny else "tiny random Llama",
        "machine": harness.machine_info(device),
        "threads": o.threads,
        "prompts": len(prompts),
        "samples": o.samples,
        "max_new_tokens": o.max_new_tokens,
        "batch_size": o.batch_size,
        "repeats": o.repeats,
        "completions_per_arm": arms["hf"]["completions"],
        "arms": arms,
        "continuous_over_hf": arms["hf_continuous"]["completions_per_s"] / arms["hf"]["completions_per_s"],
        "ks_distance": ks_distance(arms["hf"]["lengths"], arms["hf_continuous"]["lengths"]),
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


if __name__ == "__main__":
    main()
