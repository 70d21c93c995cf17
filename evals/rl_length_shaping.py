"""Experiment: does a LenVM length term in GRPO cut tokens without costing task reward?

On the embedded default (SmolLM2-135M-Instruct) and the addition task it can learn on CPU, five arms run with
the same seed, data, learning rate and step budget:

    task            the exact-match reward only
    soft_overlong   + TRL's soft overlong punishment (sequence level)
    kimi            + a token-counting group length reward in the Kimi k1.5 style (sequence level)
    lenvm_adv       + LenVM advantage shaping (per token: GAE of the length residuals)
    lenvm_pot       + LenVM potential-based shaping (per token)
    lenvm_adv_centered  lenvm_adv with the length term centred (``center_length_advantages``)

The critic is a LenVM trained first on the starting policy's own completions of *other* addition prompts
(the quickstart pipeline with a prompts file). Each arm writes its log after it ends; a rerun skips finished
arms. Outputs: ``results.json`` (per-step task reward and mean completion tokens), ``rl_length_shaping.png``
and ``summary.md``.

    python -m evals.rl_length_shaping                       # by hand: about an hour on the 2-core CPU
    python -m evals.rl_length_shaping --tiny                # CI-sized: a tiny random policy, 2 steps per arm
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ARMS = ("task", "soft_overlong", "kimi", "lenvm_adv", "lenvm_pot", "lenvm_adv_centered")
TASK_KEY = "rewards/addition_reward/mean"


class LogRecorder(TrainerCallback):
    """Keeps the per-step task reward and completion length that GRPOTrainer logs."""

    def __init__(self):
        self.rows = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and TASK_KEY in logs:
            self.rows.append({"step": state.global_step, "task_reward": logs[TASK_KEY],
                              "mean_tokens": logs["completions/mean_length"],
                              "clipped": logs.get("completions/clipped_ratio", 0.0),
                              "seconds": time.time()})


def write_prompt_file(path: Path, n: int, seed: int) -> Path:
    """Addition prompts for the critic's rollouts, drawn with another seed than the RL data."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            a, b = rng.randint(0, 20), rng.randint(0, 20)
            f.write(json.dumps({"prompt_id": f"add-{i}", "prompt": f"What is {a} + {b}?"}) + "\n")
    return path


def train_critic(out: Path, policy: str, max_new: int, temperature: float, tiny: bool) -> str:
    from lenvm_rl.quickstart import QuickstartConfig, run_quickstart

    prompts = write_prompt_file(out / "critic_prompts.jsonl", 16 if tiny else 64, seed=1234)
    cfg = QuickstartConfig(output_dir=str(out / "critic"), model=policy, prompts=str(prompts), categories="",
                           eval_prompts_per_category=4, train_samples=2 if tiny else 4, eval_samples=2 if tiny else 8,
                           max_new_tokens=max_new, temperature=temperature, top_p=1.0, num_train_epochs=1 if tiny else 3,
                           max_length=256, bf16=not tiny)
    report = run_quickstart(cfg)
    (out / "critic_report.json").write_text(json.dumps(report["length_prediction"], indent=2))
    return str(out / "critic" / "model")


def run_arm(arm: str, a, policy: str, critic_path: str) -> list[dict]:
    from trl import GRPOConfig, GRPOTrainer
    from trl.rewards import get_soft_overlong_punishment

    from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
    from lenvm_rl.rl.rewards import group_length_reward
    from lenvm_rl.rl.tasks import addition_dataset, addition_reward

    common = dict(output_dir=str(Path(a.output_dir) / "runs" / arm), per_device_train_batch_size=a.batch,
                  num_generations=a.num_generations, max_completion_length=a.max_new_tokens, max_steps=a.steps,
                  learning_rate=a.learning_rate, temperature=a.temperature, beta=0.0, use_cpu=not torch.cuda.is_available(),
                  bf16=not a.tiny, report_to=[], save_strategy="no", logging_steps=1, seed=a.seed, disable_tqdm=False)
    rewards = [addition_reward]
    if arm == "soft_overlong":
        rewards.append(get_soft_overlong_punishment(max_completion_len=a.max_new_tokens,
                                                    soft_punish_cache=a.max_new_tokens // 2))
    elif arm == "kimi":
        rewards.append(group_length_reward)
    recorder = LogRecorder()
    kwargs = dict(model=policy, reward_funcs=rewards, callbacks=[recorder],
                  train_dataset=addition_dataset(n=a.steps * a.batch // a.num_generations * 2, seed=a.seed))
    if arm.startswith("lenvm"):
        args = LengthShapedGRPOConfig(**common, critic_model_path=critic_path, length_coef=a.length_coef,
                                      length_shaping="potential" if arm == "lenvm_pot" else "advantage",
                                      center_length_advantages=arm == "lenvm_adv_centered")
        trainer = LengthShapedGRPOTrainer(args=args, **kwargs)
    else:
        trainer = GRPOTrainer(args=GRPOConfig(**common), **kwargs)
    trainer.train()
    return recorder.rows


def tokens_at_equal_reward(rows: list[dict], window: int) -> dict:
    """Mean task reward and mean completion tokens over the last ``window`` steps."""
    tail = rows[-window:] or rows
    return {"task_reward": sum(r["task_reward"] for r in tail) / len(tail),
            "mean_tokens": sum(r["mean_tokens"] for r in tail) / len(tail)}


def plot(results: dict, path: Path, smooth: int) -> Path:
    from lenvm_rl.plots import plt, save_figure

    def running(xs):
        return [sum(xs[max(0, i - smooth + 1):i + 1]) / len(xs[max(0, i - smooth + 1):i + 1]) for i in range(len(xs))]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, rows in results["arms"].items():
        steps = [r["step"] for r in rows]
        ax1.plot(steps, running([r["task_reward"] for r in rows]), label=arm)
        ax2.plot(steps, running([r["mean_tokens"] for r in rows]), label=arm)
    ax1.set(xlabel="GRPO step", ylabel=f"task reward (running mean of {smooth})", title="exact-match reward")
    ax2.set(xlabel="GRPO step", ylabel=f"completion tokens (running mean of {smooth})", title="mean completion length")
    ax2.legend()
    fig.suptitle("SmolLM2-135M-Instruct, addition task, GRPO arms with the same seed and budget")
    return save_figure(fig, path)


def summary_markdown(results: dict, window: int) -> str:
    lines = [f"| arm | task reward (first {window} steps) | task reward (last {window}) | "
             f"tokens (first {window}) | tokens (last {window}) |", "|---|---:|---:|---:|---:|"]
    for arm, rows in results["arms"].items():
        first, last = tokens_at_equal_reward(rows[:window], window), tokens_at_equal_reward(rows, window)
        lines.append(f"| {arm} | {first['task_reward']:.2f} | {last['task_reward']:.2f} | "
                     f"{first['mean_tokens']:.1f} | {last['mean_tokens']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=8, help="completions per step (num_generations per prompt)")
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--length-coef", type=float, default=0.3)
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of GRPO and of the critic's "
                                                                     "rollouts (the critic models the policy's sampling)")
    p.add_argument("--window", type=int, default=10, help="steps averaged for the table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a tiny random policy and 2 steps per arm (CI)")
    p.add_argument("--output-dir", default="evals/results/rl_length_shaping")
    a = p.parse_args(argv)

    from lenvm_rl.defaults import resolve_model

    if not torch.cuda.is_available():
        torch.set_num_threads(2)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if a.tiny:
        a.steps, a.batch, a.max_new_tokens, a.window = 2, 4, 8, 1
    policy = a.policy or resolve_model(None)
    critic_path = train_critic(out, policy, 128 if not a.tiny else 16, a.temperature, a.tiny)

    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"arms": {}}
    settings = {k: v for k, v in vars(a).items() if k not in ("output_dir", "arms")}
    if results.get("settings", settings) != settings:
        results = {"arms": {}}  # other settings: the finished arms do not compare
    results["settings"] = settings
    for arm in a.arms.split(","):
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
        if arm in results["arms"]:
            print(f"[rl_length_shaping] {arm}: done before, skipped")
            continue
        print(f"[rl_length_shaping] arm {arm}")
        results["arms"][arm] = run_arm(arm, a, policy, critic_path)
        results_file.write_text(json.dumps(results, indent=2))
    results["command"] = "python -m evals.rl_length_shaping" + (" --tiny" if a.tiny else "")
    results["final"] = {arm: tokens_at_equal_reward(rows, a.window) for arm, rows in results["arms"].items()}
    results_file.write_text(json.dumps(results, indent=2))
    png = plot(results, out / "rl_length_shaping.png", smooth=max(1, a.window // 2))
    summary = summary_markdown(results, a.window)
    (out / "summary.md").write_text(summary)
    print(summary + f"\nplot: {png}")
    return results


if __name__ == "__main__":
    main()
