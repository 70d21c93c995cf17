"""Does a quantized engine sample the same lengths as the model itself? The check `--engine_quantization int8` needs.

Samples the same prompts with hf in float32 (the reference; or reuses a rollouts file of it, --reference) and with
the engine at --quantization, then compares the completion lengths: the two-sample Kolmogorov-Smirnov distance and
p-value, and the per-prompt mean lengths paired by prompt (the mean over prompts of (engine - hf) / hf). The rule,
written before any run: KS p > 0.05 on at least 400 completions per arm, and that mean within +-5 %. The JSON it
writes is what `lenvm rollouts --engine_quantization int8 --engine_distribution_check FILE` reads.

    python -m evals.benchmarks.engine_distribution --quantization int8     # the embedded default, ~25 min on 2 cores
    python -m evals.benchmarks.engine_distribution --tiny                  # seconds: a tiny random model
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from evals.benchmarks import harness
from evals.benchmarks.harness import option
from evals.benchmarks.rollout_sampler import allow_unchecked_quantization, ks_test, spread_prompts, tiny_model

MODULE = "evals.benchmarks.engine_distribution"
DEFAULT_OUTPUT = "evals/results/engine_distribution_int8.json"


@dataclass
class DistributionOptions:
    """Lengths of an engine's completions against float32 hf sampling of the same prompts."""

    model: str | None = option("Generator (default: the embedded SmolLM2-135M-Instruct).")
    quantization: str = option("Engine quantization to check (float32 checks the conversion itself).", "int8")
    prompts: int = option("Built-in prompts, spread over the quickstart's categories.", 100)
    samples: int = option("Completions per prompt and arm.", 4)
    max_new_tokens: int = option("Completion cap (the quickstart's).", 256)
    temperature: float = option("Sampling temperature (the quickstart's).", 0.7)
    top_p: float = option("Nucleus sampling (the quickstart's).", 0.9)
    reference: str | None = option("A float32 hf rollouts file of the same model and settings to reuse.")
    threads: int = option("Threads.", 2)
    tiny: bool = option("Smoke mode: a tiny random model, 4 prompts x 2, 8 new tokens.", False)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)

    def __post_init__(self):
        if self.tiny:
            self.prompts, self.samples, self.max_new_tokens = 4, 2, 8


def paired_mean_gap(reference: list[dict], engine: list[dict]) -> float:
    """Mean over prompts (in both) of (engine's mean length - hf's) / hf's."""
    by = [defaultdict(list), defaultdict(list)]
    for side, recs in zip(by, (reference, engine)):
        for r in recs:
            side[r["prompt_id"]].append(r["num_tokens"])
    gaps = [
        (sum(by[1][p]) / len(by[1][p]) - sum(by[0][p]) / len(by[0][p])) / (sum(by[0][p]) / len(by[0][p]))
        for p in by[0]
        if p in by[1]
    ]
    if not gaps:
        raise ValueError("the reference and the engine share no prompt")
    return sum(gaps) / len(gaps)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    o = harness.parse_options(DistributionOptions, argv, f"python -m {MODULE}")
    import torch

    from lenvm_rl import ct2_engine
    from lenvm_rl.data import load_rollouts
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rollouts import SamplingConfig, generate_rollouts

    torch.set_num_threads(o.threads)
    sampling = SamplingConfig(o.samples, o.max_new_tokens, o.temperature, o.top_p, seed=0)
    with tempfile.TemporaryDirectory(prefix="engine_dist_") as tmp:
        model = o.model or (tiny_model(tmp + "/model") if o.tiny else resolve_model(None))
        if o.reference:
            reference = load_rollouts(o.reference)
            settings = {(r["generator"], json.dumps(r["sampling"], sort_keys=True)) for r in reference}
            if len(settings) != 1:
                raise ValueError(f"{o.reference} mixes generators or sampling settings")
            prompts = list(
                {r["prompt_id"]: {"prompt_id": r["prompt_id"], "prompt": r["prompt"]} for r in reference}.values()
            )
            recorded = json.loads(next(iter(settings))[1])
            sampling = SamplingConfig(
                max(r["sample_index"] for r in reference) + 1,
                recorded["max_new_tokens"],
                recorded["temperature"],
                recorded["top_p"],
                seed=recorded["seed"] + 1,  # other draws than the reference's
            )
        else:
            prompts = spread_prompts(o.prompts)
            ref_path = Path(tmp) / "hf.jsonl"
            generate_rollouts(prompts, ref_path, model, sampling, 16, backend="hf", dtype="float32")
            reference = load_rollouts(ref_path)
        out = Path(tmp) / "engine.jsonl"
        ct2_engine.converted_model(model, o.quantization)
        with allow_unchecked_quantization():  # this run is the check
            generate_rollouts(
                prompts, out, model, sampling, 64, backend="ctranslate2", engine_quantization=o.quantization
            )
        engine = load_rollouts(out)
    d, p = ks_test([r["num_tokens"] for r in reference], [r["num_tokens"] for r in engine])
    gap = paired_mean_gap(reference, engine)
    n = min(len(reference), len(engine))
    passed = n >= ct2_engine.MIN_CHECK_COMPLETIONS and p > ct2_engine.MIN_KS_P and abs(gap) <= ct2_engine.MAX_MEAN_GAP
    result = {
        "command": harness.command_line(MODULE, argv),
        "model": o.model or (None if o.tiny else model),
        "quantization": o.quantization,
        "machine": harness.machine_info("cpu"),
        "threads": o.threads,
        "sampling": sampling.record(),
        "completions_per_arm": n,
        "mean_tokens": {
            "hf": sum(r["num_tokens"] for r in reference) / len(reference),
            "engine": sum(r["num_tokens"] for r in engine) / len(engine),
        },
        "ks_distance": d,
        "ks_p": p,
        "mean_rel_gap": gap,
        "passed": passed,
        "rule": "KS p > 0.05 on >= 400 completions per arm and the paired per-prompt mean gap within +-5 %",
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


def markdown(result: dict) -> str:
    lines = harness.markdown_head(result, result["threads"])
    lines += [
        "",
        f"{result['completions_per_arm']} completions per arm; mean tokens hf {result['mean_tokens']['hf']:.1f}, "
        f"engine ({result['quantization']}) {result['mean_tokens']['engine']:.1f}; KS D {result['ks_distance']:.3f}, "
        f"p {result['ks_p']:.3f}; paired per-prompt mean gap {100 * result['mean_rel_gap']:+.1f} %: "
        f"**{'passed' if result['passed'] else 'not passed'}** ({result['rule']}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
