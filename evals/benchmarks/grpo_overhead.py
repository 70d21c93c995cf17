"""Benchmark: one length-shaped GRPO step against one plain GRPO step, side by side in one process.

Both arms train the same policy on the same prompts with the same seed and learning rate 0, so they sample
identical completions and differ only by the frozen critic's forward and the (B, T) advantage arithmetic of the
length term (``--length_shaping``: relative, gated by the task's reward, or advantage).
Arms alternate (plain, shaped, plain, shaped, ...); the figure is the ratio of median step times.

    python -m evals.benchmarks.grpo_overhead           # the embedded default as policy and critic backbone, CPU
    python -m evals.benchmarks.grpo_overhead --tiny    # seconds, fewer and shorter steps
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

from evals.benchmarks import harness
from evals.benchmarks.harness import option

MODULE = "evals.benchmarks.grpo_overhead"
DEFAULT_OUTPUT = "evals/results/bench_grpo.json"


@dataclass
class GRPOBenchOptions:
    """Median step time of LenVM-shaped GRPO over plain GRPO, same policy, prompts and seed."""

    policy: str | None = option(
        "Policy (default: the embedded SmolLM2-135M-Instruct); the critic is its backbone with a random value head."
    )
    steps: int = option("Steps per arm run (the first is a warm-up).", 4)
    repeats: int = option("Runs per arm.", 2)
    batch: int = option("Completions per step (4 per prompt).", 8)
    max_new_tokens: int = option("Completion length cap.", 64)
    length_shaping: Literal["relative", "advantage"] = option(
        "The shaped arm's length term; relative (the default) is gated by the task's reward.", "relative"
    )
    tiny: bool = option("Smoke mode: steps 2, repeats 1, batch 4, 8 new tokens.", False)
    output: str = option("JSON result path.", DEFAULT_OUTPUT)

    def __post_init__(self):
        if self.tiny:
            self.steps, self.repeats, self.batch, self.max_new_tokens = 2, 1, 4, 8


def run_arm(shaped: bool, policy: str, critic, tokenizer, o: GRPOBenchOptions, seed: int) -> list[float]:
    """Step times of one arm run (the warm-up step dropped)."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
    from lenvm_rl.rl.tasks import addition_dataset, addition_reward

    times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self._t)

    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as out_dir:
        common = dict(
            output_dir=out_dir,
            per_device_train_batch_size=o.batch,
            num_generations=4,
            max_completion_length=o.max_new_tokens,
            max_steps=o.steps,
            learning_rate=0.0,
            use_cpu=not torch.cuda.is_available(),
            bf16=True,
            report_to=[],
            save_strategy="no",
            logging_steps=1000,
            seed=seed,
            disable_tqdm=True,
        )
        kwargs = dict(
            model=policy,
            reward_funcs=addition_reward,
            processing_class=tokenizer,
            callbacks=[StepTimer()],
            train_dataset=addition_dataset(n=o.steps * o.batch, seed=seed),
        )
        if shaped:
            gate = "addition_reward" if o.length_shaping == "relative" else None
            args = LengthShapedGRPOConfig(**common, length_shaping=o.length_shaping, length_gate_reward=gate)
            trainer = LengthShapedGRPOTrainer(args=args, critic=critic, **kwargs)
        else:
            trainer = GRPOTrainer(args=GRPOConfig(**common), **kwargs)
        trainer.train()
    return times[1:]  # the first step warms up


def markdown(result: dict) -> str:
    med = result["median_step_seconds"]
    rows = [
        ["plain GRPO", f"{med['plain']:.2f}"],
        [f"LenVM-shaped GRPO ({result['length_shaping']})", f"{med['shaped']:.2f}"],
        ["shaped / plain", f"{result['shaped_over_plain']:.3f}x"],
    ]
    return "\n".join(harness.markdown_head(result, 2) + [""] + harness.markdown_table(["arm", "median step (s)"], rows))


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    o = harness.parse_options(GRPOBenchOptions, argv, f"python -m {MODULE}")
    import torch
    from transformers import AutoTokenizer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.modeling import LengthValueModel

    torch.set_num_threads(2)
    policy = o.policy or resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    critic = LengthCritic(LengthValueModel.from_backbone(policy, gamma=0.98), tokenizer)  # random head: speed only
    times = {"plain": [], "shaped": []}
    for r in range(o.repeats):
        for arm in ("plain", "shaped"):
            times[arm] += run_arm(arm == "shaped", policy, critic, tokenizer, o, r)
    med = {arm: statistics.median(t) for arm, t in times.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "command": harness.command_line(MODULE, argv),
        "policy": policy,
        "device": device,
        "torch": torch.__version__,
        "machine": harness.machine_info(device),
        "batch": o.batch,
        "max_new_tokens": o.max_new_tokens,
        "length_shaping": o.length_shaping,
        "step_seconds": times,
        "median_step_seconds": med,
        "shaped_over_plain": med["shaped"] / med["plain"],
    }
    return harness.write_result(result, o.output, DEFAULT_OUTPUT, markdown)


if __name__ == "__main__":
    main()
