"""Benchmark: completions per second of the rollout samplers, side by side in one process.

    hf              padded batches through ``model.generate``: a batch runs until its longest row ends (the reference)
    hf_continuous   transformers' continuous batching (``generate_batch``): a finished row's slot takes the
                    next prompt at once
    ctranslate2     the CPU engine (lenvm_rl/ct2_engine.py), float32: batches that shrink as rows end
    ctranslate2_int8  the same engine on an int8 conversion (a different model: see engine_distribution.py)
    ort_genai       ONNX Runtime GenAI's batched Generator, float32 (evals/benchmarks/ort_genai_arm.py, run in its own
                    venv; padded batches of at most 32 rows). Only with ``--ort_python`` and ``--ort_model``; its
                    seconds are the script's model load plus sampling (the other arms load their model on the clock)

All sample the same prompts (the quickstart's built-in prompts, spread over its categories) with the same
settings (T 0.7, top-p 0.9, the same cap), so their answers come from the same distribution; the result says how
close each arm's lengths are to hf's (mean, finished share, the two-sample Kolmogorov-Smirnov distance and p).
Each arm runs at its own rows at once (``--batch_size`` for hf, ``--engine_batch_size`` for the others). Arms
rotate each repeat, each repeat with its own seed; every call loads the model (the engine's one-time conversion
is done before the clock starts). The figure is total completions / total seconds per arm, and each / hf.

    python -m evals.benchmarks.rollout_sampler           # the embedded default, CPU
    python -m evals.benchmarks.rollout_sampler --tiny    # seconds: a tiny random model

The ``ort_genai`` arm needs its own venv (onnxruntime-genai pins its own onnxruntime and numpy) and the model
converted by og's builder (float32, CPU):

    python -m venv /tmp/ogvenv && /tmp/ogvenv/bin/pip install onnxruntime-genai onnx onnx_ir transformers torch
    /tmp/ogvenv/bin/python -m onnxruntime_genai.models.builder -m HF_DIR -i HF_DIR -o OG_DIR -p fp32 -e cpu -c CACHE
    python -m evals.benchmarks.rollout_sampler --arms hf,ctranslate2,ort_genai \
        --ort_python /tmp/ogvenv/bin/python --ort_model OG_DIR
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.rollout_sampler"
DEFAULT_OUTPUT = "evals/results/bench_rollout_sampler.json"
ARMS = ("hf", "hf_continuous", "ctranslate2", "ctranslate2_int8")
ORT_ARM = "ort_genai"  # optional: not in the default arms, needs --ort_python and --ort_model
CATEGORIES = ("one_word", "yes_no", "short_fact", "list", "explain", "steps", "story")  # the quickstart's


@dataclass
class SamplerBenchOptions:
    """Completions per second of the padded-batch and the continuous-batching rollout samplers."""

    model: str | None = option("Generator (default: the embedded SmolLM2-135M-Instruct).")
    prompts: int = option("Built-in prompts, spread over the quickstart's categories.", 32)
    samples: int = option("Completions per prompt.", 2)
    max_new_tokens: int = option("Completion cap (the quickstart's: 256).", 256)
    batch_size: int = option("Rows at once for hf (the quickstart's generation_batch_size is 32).", 16)
    engine_batch_size: int = option("Rows at once for hf_continuous and the engine arms.", 64)
    arms: str = option("Comma-separated arms (hf first: the others are compared with it).", ",".join(ARMS))
    repeats: int = option("Runs per arm (seeds 0, 1, ...).", 2)
    threads: int = option("torch threads (and og's intra-op threads).", 2)
    ort_python: str | None = option("The python of the venv with onnxruntime-genai (for the ort_genai arm).")
    ort_model: str | None = option("The og builder's output for --model (for the ort_genai arm).")
    ort_batch_size: int = option("Rows at once for ort_genai (og's Generator takes at most 32).", 32)
    tiny: bool = option("Smoke mode: a tiny random model, 4 prompts x 2, 8 new tokens, 1 repeat.", False)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)

    def __post_init__(self):
        if self.tiny:
            self.prompts, self.samples, self.max_new_tokens, self.repeats, self.batch_size = 4, 2, 8, 1, 4
            self.engine_batch_size = 4
        self.arm_list = [a.strip() for a in self.arms.split(",") if a.strip()]
        if not self.arm_list or self.arm_list[0] != "hf" or not set(self.arm_list) <= {*ARMS, ORT_ARM}:
            raise ValueError(f"--arms must start with hf and name only {', '.join(ARMS)}, {ORT_ARM}; got {self.arms!r}")
        if ORT_ARM in self.arm_list and not (self.ort_python and self.ort_model):
            raise ValueError(f"the {ORT_ARM} arm needs --ort_python and --ort_model (see this module's docstring)")


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


def ks_test(a: list[int], b: list[int]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov distance and its asymptotic p-value (Stephens' correction)."""
    import math

    d = ks_distance(a, b)
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p)) if lam > 0 else 1.0


def markdown(result: dict) -> str:
    rows = [
        [
            arm,
            str(s["rows_at_once"]),
            f"{s['completions_per_s']:.2f}",
            f"{s['tokens_per_s']:.1f}",
            f"{s['over_hf']:.2f}x",
            f"{s['mean_tokens']:.1f}",
            f"{100 * s['finished']:.0f} %",
            f"{s['ks_vs_hf']:.3f} / {s['ks_p_vs_hf']:.2f}",
            f"{s['foreign_cpu_share'] if s['foreign_cpu_share'] is None else round(100 * s['foreign_cpu_share'])} %",
        ]
        for arm, s in result["arms"].items()
    ]
    lines = harness.markdown_head(result, result["threads"])
    lines += [""] + harness.markdown_table(
        [
            "sampler",
            "rows at once",
            "completions / s",
            "tokens / s",
            "vs hf",
            "mean tokens",
            "finished",
            "KS vs hf (D / p)",
            "others' CPU share",
        ],
        rows,
    )
    lines += ["", f"{result['completions_per_arm']} completions per arm, cap {result['max_new_tokens']} tokens."]
    lines += harness.busy_warning([s["foreign_cpu_share"] for s in result["arms"].values()], 0.1, "nothing else")
    return "\n".join(lines)


def run_arm(arm: str, prompts, model: str, sampling, rows_at_once: int, out: Path, o=None) -> float:
    """Seconds one arm takes to sample ``prompts`` into ``out`` (the engine's conversion is cached beforehand)."""
    from lenvm_rl.rollouts import generate_rollouts

    if arm == ORT_ARM:
        return run_ort(prompts, model, sampling, rows_at_once, out, o)
    backend = arm.removesuffix("_int8")
    quant = {"engine_quantization": "int8", "engine_distribution_check": _UNCHECKED} if arm.endswith("_int8") else {}
    t0 = time.perf_counter()
    generate_rollouts(prompts, out, model, sampling, rows_at_once, backend=backend, progress=False, **quant)
    return time.perf_counter() - t0


def run_ort(prompts, model: str, sampling, rows_at_once: int, out: Path, o) -> float:
    """The ort_genai arm: ort_genai_arm.py in the other venv samples the same encoded prompts; its completions
    are written to ``out`` as records (ids, num_tokens, finish_reason), and its load + sampling seconds returned."""
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from lenvm_rl.data import encode_prompt
    from lenvm_rl.sampling_backends import _eos_ids

    genai = json.loads((Path(o.ort_model) / "genai_config.json").read_text())["model"]
    config = AutoConfig.from_pretrained(model)
    if (genai["decoder"]["num_hidden_layers"], genai["decoder"]["hidden_size"]) != (
        config.num_hidden_layers,
        config.hidden_size,
    ):
        raise ValueError(f"--ort_model {o.ort_model} was not built from {model}: convert that model (docstring)")
    tokenizer = AutoTokenizer.from_pretrained(model)
    eos = _eos_ids(tokenizer, SimpleNamespace(generation_config=GenerationConfig.from_pretrained(model)))
    spec = {
        "model": o.ort_model,
        "prompts": [encode_prompt(tokenizer, p["prompt"], True) for p in prompts],
        "samples": sampling.num_samples,
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed,
        "rows_at_once": rows_at_once,
        "threads": o.threads,
        "eos_ids": sorted(eos),
    }
    spec_path, result_path = out.with_suffix(".spec.json"), out.with_suffix(".og.json")
    spec_path.write_text(json.dumps(spec))
    script = Path(__file__).with_name("ort_genai_arm.py")
    subprocess.run([o.ort_python, str(script), str(spec_path), str(result_path)], check=True)
    result = json.loads(result_path.read_text())
    with out.open("w") as f:
        for p, samples in zip(prompts, result["completions"]):
            for k, c in enumerate(samples):
                rec = {"prompt_id": p["prompt_id"], "sample_index": k, "completion_ids": c["ids"]}
                rec |= {"num_tokens": len(c["ids"]), "finish_reason": "stop" if c["finished"] else "length"}
                f.write(json.dumps(rec) + "\n")
    return result["seconds"] + result["load_seconds"]


def _children_jiffies() -> int:
    """CPU time of this process's finished children (the ort_genai subprocess), in /proc/stat's 1/100 s."""
    t = os.times()
    return round(100 * (t.children_user + t.children_system))


_UNCHECKED = "unchecked"  # the benchmark times the int8 engine whatever its distribution; rollouts never do


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    o = harness.parse_options(SamplerBenchOptions, argv, f"python -m {MODULE}")
    import torch

    from lenvm_rl import ct2_engine
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.rollouts import SamplingConfig

    torch.set_num_threads(o.threads)
    prompts = spread_prompts(o.prompts)
    arm_names = o.arm_list
    seconds = {arm: 0.0 for arm in arm_names}
    records = {arm: [] for arm in arm_names}
    spans = {arm: [] for arm in arm_names}
    rows_at_once = {arm: o.batch_size if arm == "hf" else o.engine_batch_size for arm in arm_names}
    rows_at_once |= {ORT_ARM: o.ort_batch_size} if ORT_ARM in arm_names else {}
    with tempfile.TemporaryDirectory(prefix="bench_sampler_") as tmp, allow_unchecked_quantization():
        model = o.model or (tiny_model(tmp + "/model") if o.tiny else resolve_model(None))
        prompt_tokens = _mean_prompt_tokens(prompts, model)
        for arm in arm_names:  # one-time conversions, off the clock
            if arm.startswith("ctranslate2"):
                ct2_engine.converted_model(model, "int8" if arm.endswith("_int8") else "float32")
        for r in range(o.repeats):
            order = arm_names[r % len(arm_names) :] + arm_names[: r % len(arm_names)]
            for arm in order:
                out = Path(tmp) / f"{arm}_{r}.jsonl"
                sampling = SamplingConfig(o.samples, o.max_new_tokens, temperature=0.7, top_p=0.9, seed=r)
                before, children = harness.cpu_snapshot(), _children_jiffies()
                seconds[arm] += run_arm(arm, prompts, model, sampling, rows_at_once[arm], out, o)
                after = harness.cpu_snapshot()
                span = None if before is None or after is None else [y - x for x, y in zip(before, after)]
                if span:  # a subprocess's CPU is this arm's own, not another job's
                    span[2] += _children_jiffies() - children
                spans[arm].append(span)
                records[arm] += [json.loads(line) for line in out.read_text().splitlines()]
                harness.log(False, f"[rollout_sampler] repeat {r} {arm}: {seconds[arm]:.1f} s so far")
    arms = {}
    for arm in arm_names:
        lengths = [rec["num_tokens"] for rec in records[arm]]
        d, p = ks_test(lengths, [rec["num_tokens"] for rec in records["hf"]])
        arms[arm] = {
            "rows_at_once": rows_at_once[arm],
            "seconds": seconds[arm],
            "completions": len(lengths),
            "completions_per_s": len(lengths) / seconds[arm],
            "tokens_per_s": sum(lengths) / seconds[arm],
            "mean_tokens": sum(lengths) / len(lengths),
            "finished": sum(rec["finish_reason"] == "stop" for rec in records[arm]) / len(lengths),
            "ks_vs_hf": d,
            "ks_p_vs_hf": p,
            "foreign_cpu_share": harness.share_of(spans[arm]),
            "lengths": lengths,
        }
    for arm in arm_names:
        arms[arm]["over_hf"] = arms[arm]["completions_per_s"] / arms["hf"]["completions_per_s"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "command": harness.command_line(MODULE, argv),
        "model": model if o.model or not o.tiny else "tiny random Llama",
        "machine": harness.machine_info(device),
        "threads": o.threads,
        "prompts": len(prompts),
        "samples": o.samples,
        "max_new_tokens": o.max_new_tokens,
        "repeats": o.repeats,
        "completions_per_arm": arms["hf"]["completions"],
        "mean_prompt_tokens": prompt_tokens,
        "arms": arms,
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


def _mean_prompt_tokens(prompts, model: str) -> float:
    from transformers import AutoTokenizer

    from lenvm_rl.data import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    return sum(len(encode_prompt(tokenizer, p["prompt"], True)) for p in prompts) / len(prompts)


class allow_unchecked_quantization:
    """Within the benchmarks only: run a quantized engine without a distribution check (its lengths are reported
    beside hf's; whether rollouts may use it is decided by evals/benchmarks/engine_distribution.py)."""

    def __enter__(self):
        from lenvm_rl import ct2_engine

        self._check = ct2_engine.check_quantized
        ct2_engine.check_quantized = lambda model, quantization, check: None

    def __exit__(self, *exc):
        from lenvm_rl import ct2_engine

        ct2_engine.check_quantized = self._check


if __name__ == "__main__":
    main()
