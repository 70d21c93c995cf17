"""Roofline: how much of this machine's matrix-multiply rate each rollout sampler and each LenVM trainer uses.

1. The machine: float32 matmul FLOP/s at the default model's shapes, one thread count, best of a few runs:
   decode, (B x d) @ (d x ff) for B = 1, 16, 64, 256, and the LM head (B x d) @ (d x V) at B = 64;
   training, (4096 x d) @ (d x ff).
2. The work: FLOPs a generated token costs (2 x the weights it multiplies, LM head included, plus attention at the
   mean context) and a trained token costs per epoch (forward 2N, backward 4N over the trained layers; a frozen
   trunk's forward counts once, spread over the epochs; no LM head: the value head replaces it).
3. The runs, in this process one after another: every sampler of evals/benchmarks/rollout_sampler.py and every
   trainer arm of evals/benchmarks/trunk_training.py, on reduced workloads. Each one's tokens/s x FLOPs per token,
   as a fraction of the matmul rate at its shape: the decode limit at the sampler's rows at once, the training
   rate for trainers.

    python -m evals.benchmarks.roofline           # the embedded default, about 25 min on 2 cores
    python -m evals.benchmarks.roofline --tiny    # seconds
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.roofline"
DEFAULT_OUTPUT = "evals/results/bench_roofline.json"
DECODE_ROWS = (1, 16, 64, 256)


@dataclass
class RooflineOptions:
    """Matmul FLOP/s at the default model's shapes, and each sampler's and trainer's share of it."""

    threads: int = option("torch threads (and the engine's).", 2)
    prompts: int = option("Built-in prompts for the samplers (x 2 samples).", 24)
    examples: int = option("Training examples for the trainers.", 48)
    samplers: str = option("Sampler arms (rollout_sampler's).", "hf,hf_continuous,ctranslate2,ctranslate2_int8")
    trainers: str = option("Trainer arms (trunk_training's).", "today,L24,L30,L24+packed")
    tiny: bool = option("Smoke mode: tiny shapes and workloads.", False)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)


def matmul_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Best float32 GFLOP/s of (m x k) @ (k x n) over a few timed windows of ``seconds``."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)  # warm-up
    best = 0.0
    for _ in range(3):
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / 3:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    return best


def layer_weights(config) -> int:
    """Weights one decoder layer multiplies (attention projections + gated MLP)."""
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q = o = d * config.num_attention_heads * head_dim
    kv = 2 * d * config.num_key_value_heads * head_dim
    return q + o + kv + 3 * d * config.intermediate_size


def attention_flops(config, context: float) -> float:
    """Score and value products of one token against ``context`` earlier tokens, all layers."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 4 * config.num_hidden_layers * context * config.num_attention_heads * head_dim


def decode_flops_per_token(config, context: float) -> float:
    body = config.num_hidden_layers * layer_weights(config)
    return 2 * (body + config.hidden_size * config.vocab_size) + attention_flops(config, context)


def train_flops_per_token(config, trunk_layers: int | None, epochs: float, context: float) -> float:
    """Per trained token and epoch: 6 x the trained layers' weights (+ attention x 3), the trunk's forward once."""
    per_layer = 2 * layer_weights(config) + attention_flops(config, context) / config.num_hidden_layers
    frozen = trunk_layers or 0
    trained = config.num_hidden_layers - frozen
    return 3 * per_layer * trained + per_layer * frozen / epochs


def machine_rates(config, tiny: bool) -> dict:
    d, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    secs = 0.3 if tiny else 2.0
    return {
        "decode_mlp": {str(b): matmul_gflops(b, d, ff, secs) for b in DECODE_ROWS},
        "decode_lm_head_64": matmul_gflops(64, d, vocab, secs),
        "train_mlp_4096": matmul_gflops(4096, d, ff, secs),
    }


def decode_rate_at(rates: dict, rows: int) -> float:
    """The decode GFLOP/s at the measured row count nearest below ``rows`` (1 if fewer)."""
    usable = [b for b in DECODE_ROWS if b <= max(rows, 1)]
    return rates["decode_mlp"][str(max(usable))]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    o = harness.parse_options(RooflineOptions, argv, f"python -m {MODULE}")
    import torch
    from transformers import AutoConfig

    from evals.benchmarks import rollout_sampler, trunk_training
    from lenvm_rl.defaults import resolve_model

    torch.set_num_threads(o.threads)
    with tempfile.TemporaryDirectory(prefix="roofline_") as tmp:
        model = rollout_sampler.tiny_model(tmp + "/model") if o.tiny else resolve_model(None)
        config = AutoConfig.from_pretrained(model)
        rates = machine_rates(config, o.tiny)
        sampler_args = ["--arms", o.samplers, "--repeats", "1", "--threads", str(o.threads)]
        sampler_args += ["--tiny"] if o.tiny else ["--prompts", str(o.prompts), "--model", model]
        sampled = rollout_sampler.main(sampler_args + ["--output", tmp + "/samplers.json"])
        trainer_args = ["--tiny"] if o.tiny else ["--examples", str(o.examples), "--dtype", "fp32"]
        trainer_args += ["--arms", *(o.trainers.split(",") if not o.tiny else ["today", "L1", "L2"])]
        trainer_args += ["--threads", str(o.threads), "--quiet"]
        trained = trunk_training.main(trainer_args + ["--output", tmp + "/trainers.json"])
    samplers = {}
    for arm, s in sampled["arms"].items():
        context = sampled.get("mean_prompt_tokens", 40) + s["mean_tokens"] / 2
        flops = decode_flops_per_token(config, context)
        peak = decode_rate_at(rates, s["rows_at_once"]) * 1e9
        samplers[arm] = {
            "tokens_per_s": s["tokens_per_s"],
            "rows_at_once": s["rows_at_once"],
            "limit_tokens_per_s": peak / flops,
            "fraction_of_limit": s["tokens_per_s"] * flops / peak,
        }
    trainers = {}
    peak = rates["train_mlp_4096"] * 1e9
    cfg = trained["config"]
    mean_length = cfg["tokens_per_epoch"] / cfg["examples"]
    for arm, t in trained["summary"].items():
        layers = trunk_training.arm_settings(arm)["trunk_layers"]
        flops = train_flops_per_token(config, layers, cfg["epochs"], mean_length / 2)
        trainers[arm] = {
            "tokens_per_s": t["end_to_end_tokens_per_s"],
            "limit_tokens_per_s": peak / flops,
            "fraction_of_limit": t["end_to_end_tokens_per_s"] * flops / peak,
        }
    result = {
        "command": harness.command_line(MODULE, argv),
        "model": "tiny random Llama" if o.tiny else model,
        "machine": harness.machine_info("cpu"),
        "threads": o.threads,
        "matmul_gflops": rates,
        "samplers": samplers,
        "trainers": trainers,
        "sampler_run": {k: v for k, v in sampled.items() if k not in ("arms", "markdown")},
        "trainer_run": {k: v for k, v in trained.items() if k not in ("summary", "runs", "markdown")},
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


def markdown(result: dict) -> str:
    r = result["matmul_gflops"]
    lines = harness.markdown_head(result, result["threads"])
    lines += [
        "",
        "float32 matmul GFLOP/s: decode rows "
        + ", ".join(f"{b}: {v:.0f}" for b, v in r["decode_mlp"].items())
        + f"; LM head at 64 rows {r['decode_lm_head_64']:.0f}; training (4096 rows) {r['train_mlp_4096']:.0f}.",
        "",
    ]
    rows = [
        [
            "sampler " + a,
            f"{s['tokens_per_s']:.1f}",
            f"{s['limit_tokens_per_s']:.0f}",
            f"{100 * s['fraction_of_limit']:.0f} %",
        ]
        for a, s in result["samplers"].items()
    ] + [
        [
            "trainer " + a,
            f"{t['tokens_per_s']:.1f}",
            f"{t['limit_tokens_per_s']:.0f}",
            f"{100 * t['fraction_of_limit']:.0f} %",
        ]
        for a, t in result["trainers"].items()
    ]
    lines += harness.markdown_table(["arm", "tokens / s", "limit tokens / s", "of the limit"], rows)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
