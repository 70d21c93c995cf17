"""Benchmark: one length-shaped GRPO step against one plain GRPO step, side by side in one process.

Both arms train the same policy on the same prompts with the same seed and learning rate 0, so they sample
identical completions and differ only by the frozen critic's forward and the (B, T) advantage arithmetic.
Arms alternate (plain, shaped, plain, shaped, ...); the figure is the ratio of median step times.

    python -m evals.bench_grpo                     # the embedded default as policy and critic backbone, CPU
    python -m evals.bench_grpo --tiny              # seconds, a tiny random policy
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def run_arm(shaped: bool, policy: str, critic, tokenizer, steps: int, batch: int, max_new: int, seed: int) -> list:
    from trl import GRPOConfig, GRPOTrainer

    from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
    from lenvm_rl.rl.tasks import addition_dataset, addition_reward

    common = dict(output_dir="/tmp/bench_grpo", per_device_train_batch_size=batch, num_generations=4,
                  max_completion_length=max_new, max_steps=steps, learning_rate=0.0, use_cpu=not torch.cuda.is_available(),
                  bf16=True, report_to=[], save_strategy="no", logging_steps=1000, seed=seed, disable_tqdm=True)
    timer = StepTimer()
    kwargs = dict(model=policy, reward_funcs=addition_reward, train_dataset=addition_dataset(n=steps * batch, seed=seed),
                  processing_class=tokenizer, callbacks=[timer])
    if shaped:
        trainer = LengthShapedGRPOTrainer(args=LengthShapedGRPOConfig(**common), critic=critic, **kwargs)
    else:
        trainer = GRPOTrainer(args=GRPOConfig(**common), **kwargs)
    trainer.train()
    return timer.times[1:]  # the first step warms up


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--steps", type=int, default=4, help="steps per arm run (the first is a warm-up)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--output", default="evals/results/bench_grpo.json")
    a = p.parse_args(argv)

    from transformers import AutoTokenizer

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.modeling import LengthValueModel

    torch.set_num_threads(2)
    policy = a.policy or resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if a.tiny:
        a.steps, a.repeats, a.batch, a.max_new_tokens = 2, 1, 4, 8
    critic = LengthCritic(LengthValueModel.from_backbone(policy, gamma=0.98), tokenizer)  # random head: speed only
    times = {"plain": [], "shaped": []}
    for r in range(a.repeats):
        for arm in ("plain", "shaped"):
            times[arm] += run_arm(arm == "shaped", policy, critic, tokenizer, a.steps, a.batch, a.max_new_tokens, r)
    med = {arm: statistics.median(t) for arm, t in times.items()}
    result = {"command": "python -m evals.bench_grpo" + (" --tiny" if a.tiny else ""), "policy": policy,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
              "batch": a.batch, "max_new_tokens": a.max_new_tokens, "step_seconds": times,
              "median_step_seconds": med, "shaped_over_plain": med["shaped"] / med["plain"]}
    print(f"| arm | median step (s) |\n|---|---:|\n| plain GRPO | {med['plain']:.2f} |\n"
          f"| LenVM-shaped GRPO | {med['shaped']:.2f} |\n| shaped / plain | {result['shaped_over_plain']:.3f}x |")
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
