"""The `lenvm` command: quickstart | rollouts | train | predict | generate | merge | grpo | eval (each with --help)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

COMMANDS = {
    "quickstart": "sample, train and evaluate a LenVM on the embedded default model, offline",
    "rollouts": "sample completions to pretrain a LenVM on (JSONL, resumable)",
    "train": "train a LenVM from rollouts (--config recipe.yaml; YAML keys are config fields)",
    "predict": "predict the answer length of prompts with a trained LenVM",
    "generate": "generate with a length target (equal / at_most / at_least) or length tilting",
    "merge": "merge a LoRA LenVM checkpoint into a full checkpoint",
    "grpo": "GRPO with LenVM length shaping (--config recipe.yaml; TRL's GRPO keys plus the length fields)",
    "eval": "evaluations: length_prediction | lifebench | tradeoff | length_tokens | visualize (JSON, PNG, markdown)",
    "demo": "a local web page: predicted length, tokens tinted by length shift, length controls (extra: demo)",
}


# ------------------------------------------------------------------------------------------ quickstart
def quickstart(argv: list[str]) -> int:
    from trl import TrlParser

    from .quickstart import QuickstartConfig, main

    (cfg,) = TrlParser([QuickstartConfig], prog="lenvm quickstart").parse_args_and_config(argv)
    main(cfg)
    return 0


# ------------------------------------------------------------------------------------------ rollouts
def rollouts(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lenvm rollouts", description=COMMANDS["rollouts"])
    p.add_argument("--model", default=None, help="generator: hub id or path (default: the embedded SmolLM2-135M)")
    p.add_argument("--prompts", default="builtin", help="'builtin', a .jsonl/.json/.txt file, or a dataset id")
    p.add_argument("--prompt-field", default=None, help="prompt column (default: prompt / messages / question)")
    p.add_argument("--split", default="train", help="dataset split, for a dataset id")
    p.add_argument("--dataset-config", default=None, help="dataset config name, for a dataset id")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--num-samples", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="rows per generate call (hf backend)")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--no-chat-template", action="store_true", help="encode prompts as plain text (base models)")
    p.add_argument("--output", required=True, help="JSONL file; appended to and resumed")
    a = p.parse_args(argv)

    from .rollouts import SamplingConfig, generate_rollouts, load_prompts, rollout_summary

    prompts = load_prompts(a.prompts, a.prompt_field, a.split, a.dataset_config, a.limit)
    sampling = SamplingConfig(a.num_samples, a.max_new_tokens, a.temperature, a.top_p, a.seed)
    out = generate_rollouts(prompts, a.output, a.model, sampling, a.batch_size, a.backend, a.dtype,
                            use_chat_template=not a.no_chat_template)
    s = rollout_summary(out)
    print(f"[lenvm] {out}: {s['records']} rollouts over {s['prompts']} prompts; {s['truncated']} truncated; "
          f"finished lengths {s['min_length']}-{s['max_length']} tokens (mean {s['mean_length']:.1f})")
    return 0


# ------------------------------------------------------------------------------------------ train
@dataclass
class TrainScriptArguments:
    """Data arguments of `lenvm train`."""

    rollouts: str = field(default=None, metadata={"help": "Rollouts JSONL file from `lenvm rollouts`."})
    eval_rollouts: str | None = field(default=None, metadata={"help": "Held-out rollouts JSONL (optional)."})
    eval_share: float = field(default=0.0, metadata={"help": "Share of prompts held out for evaluation when "
                                                              "no eval_rollouts are given."})


def train(argv: list[str]) -> int:
    from trl import ModelConfig, TrlParser

    from .launch import already_launched, relaunch, split_launch_args
    from .trainer import LengthValueConfig

    parser = TrlParser([TrainScriptArguments, LengthValueConfig, ModelConfig], prog="lenvm train")
    script_args, training_args, model_args, remaining = parser.parse_args_and_config(
        argv, return_remaining_strings=True)
    launch, unknown = split_launch_args(remaining)
    if unknown:
        parser.error(f"unknown arguments: {unknown}")
    if launch and not already_launched():
        return relaunch("train", argv, launch)
    run_train(script_args, training_args, model_args)
    return 0


def run_train(script_args: TrainScriptArguments, training_args, model_args) -> None:
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from .data import build_dataset, load_rollouts, split_by_prompt
    from .defaults import resolve_model
    from .modeling import LengthValueModel, backbone_load_kwargs, ensure_writable_output
    from .trainer import LengthValueTrainer

    if not script_args.rollouts:
        raise SystemExit("lenvm train needs rollouts: --rollouts FILE (or `rollouts:` in the recipe).")
    if not training_args.resume_from_checkpoint:
        ensure_writable_output(training_args.output_dir, training_args.overwrite_output_dir)  # before any work
    name = resolve_model(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    records = load_rollouts(script_args.rollouts)
    if script_args.eval_rollouts:
        eval_records = load_rollouts(script_args.eval_rollouts)
    else:
        records, eval_records = split_by_prompt(records, script_args.eval_share, training_args.seed)
    kw = dict(max_length=training_args.max_length, use_chat_template=training_args.use_chat_template)
    train_ds, stats = build_dataset(records, tokenizer, **kw)
    print(f"[lenvm] train data: {stats.summary()}")
    eval_ds = None
    if eval_records:
        eval_ds, eval_stats = build_dataset(eval_records, tokenizer, **kw)
        print(f"[lenvm] eval data: {eval_stats.summary()}")
    model = LengthValueModel.from_backbone(name, **backbone_load_kwargs(model_args))
    trainer = LengthValueTrainer(model, training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                                 processing_class=tokenizer, peft_config=get_peft_config(model_args))
    print(f"[lenvm] gamma = {trainer.gamma:.6f}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    print(f"[lenvm] trained LenVM saved to {training_args.output_dir}")
    if eval_ds is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


# ------------------------------------------------------------------------------------------ predict
def predict(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lenvm predict", description=COMMANDS["predict"])
    p.add_argument("--critic", required=True, help="LenVM checkpoint dir")
    p.add_argument("--prompt", action="append", default=[], help="a user prompt (repeatable)")
    p.add_argument("--prompts-file", default=None, help="one prompt per line, or a prompts JSONL")
    p.add_argument("--gamma", type=float, default=None, help="only for checkpoints without lenvm_config.json")
    p.add_argument("--dtype", default=None, choices=[None, "bfloat16", "float16", "float32"])
    a = p.parse_args(argv)

    from .critic import LengthCritic
    from .rollouts import load_prompts

    prompts = [[{"role": "user", "content": x}] for x in a.prompt]
    if a.prompts_file:
        prompts += [r["prompt"] for r in load_prompts(a.prompts_file)]
    if not prompts:
        p.error("give at least one --prompt or a --prompts-file")
    critic = LengthCritic.from_pretrained(a.critic, gamma=a.gamma, dtype=a.dtype)
    for msgs, n in zip(prompts, critic.predict_length(prompts).tolist()):
        print(f"{n:8.1f} tokens  {msgs[-1]['content'][:100]!r}")
    return 0


# ------------------------------------------------------------------------------------------ generate
def generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lenvm generate", description=COMMANDS["generate"])
    p.add_argument("--critic", required=True, help="LenVM checkpoint dir")
    p.add_argument("--model", default=None, help="generator (default: the embedded SmolLM2-135M-Instruct); "
                                                 "its vocabulary must match the critic's")
    p.add_argument("--prompt", action="append", required=True, help="a user prompt (repeatable)")
    p.add_argument("--mode", choices=["equal", "at_most", "at_least", "tilt"], default="equal")
    p.add_argument("--target-tokens", type=int, default=None, help="generator tokens, EOS not counted")
    p.add_argument("--beta", type=float, default=None, help="tilt strength; > 0 shortens, < 0 lengthens")
    p.add_argument("--rule", choices=["soft", "extreme"], default="soft",
                   help="at_most / at_least rules: ours (soft) or the reference code's (extreme)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="the generation cap")
    p.add_argument("--overshoot", type=int, default=None,
                   help="equal mode: hard stop at target + overshoot tokens (default max(4, 10%% of the target))")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None, help="candidates per step (default 15; 50 for tilt)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="most probable allowed candidate instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gamma", type=float, default=None, help="only for checkpoints without lenvm_config.json")
    a = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .critic import LengthCritic
    from .decoding import check_request, generate_with_length
    from .defaults import resolve_model

    check_request(a.mode, a.target_tokens, a.beta, a.max_new_tokens, a.rule)  # before loading anything
    name = resolve_model(a.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
    critic = LengthCritic.from_pretrained(a.critic, gamma=a.gamma, device=device)
    results = generate_with_length(model, critic, a.prompt, tokenizer=AutoTokenizer.from_pretrained(name),
                                   mode=a.mode, target_tokens=a.target_tokens, beta=a.beta,
                                   max_new_tokens=a.max_new_tokens, do_sample=not a.greedy,
                                   temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
                                   rule=a.rule, overshoot=a.overshoot, seed=a.seed)
    for prompt, r in zip(a.prompt, results):  # end: natural (EOS sampled) | forced (by the rule) | cap (max tokens)
        print(f"### {prompt}\n{r['text']}\n[{r['num_tokens']} tokens, end: {r['end']}]\n")
    return 0


# ------------------------------------------------------------------------------------------ grpo
def grpo(argv: list[str]) -> int:
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser
    from trl.scripts.grpo import GRPOScriptArguments

    from .launch import already_launched, relaunch, split_launch_args
    from .rl.config import LengthShapedGRPOConfig

    parser = TrlParser([GRPOScriptArguments, LengthShapedGRPOConfig, ModelConfig, DatasetMixtureConfig],
                       prog="lenvm grpo")
    *parsed, remaining = parser.parse_args_and_config(argv, return_remaining_strings=True)
    launch, unknown = split_launch_args(remaining)
    if unknown:
        parser.error(f"unknown arguments: {unknown}")
    if launch and not already_launched():
        return relaunch("grpo", argv, launch)
    run_grpo(*parsed)
    return 0


def resolve_reward(name: str):
    """A reward function by dotted path (as `trl grpo` does) or by the short name of one of ours."""
    import importlib

    import trl.rewards

    from .rl import rewards, tasks

    ours = {"critic_length_return": rewards.critic_length_return, "group_length_reward": rewards.group_length_reward,
            "addition_reward": tasks.addition_reward, "gsm8k_reward": tasks.gsm8k_reward}
    if name in ours:
        return ours[name]
    if "." not in name and hasattr(trl.rewards, name):
        return getattr(trl.rewards, name)  # TRL's own, e.g. accuracy_reward
    if "." not in name:
        raise ValueError(f"unknown reward {name!r}: give a dotted import path or one of {sorted(ours)}")
    module, attr = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def run_grpo(script_args, training_args, model_args, dataset_args) -> None:
    from pathlib import Path

    from datasets import load_dataset
    from trl import GRPOTrainer, get_dataset, get_peft_config

    from .defaults import resolve_model
    from .rl import LengthShapedGRPOTrainer
    from .rl.tasks import ADDITION, addition_dataset, as_prompts

    if not script_args.reward_funcs:
        raise SystemExit("lenvm grpo needs reward_funcs (dotted paths or: addition_reward, group_length_reward, "
                         "critic_length_return).")
    reward_funcs = [resolve_reward(name) for name in script_args.reward_funcs]
    name = script_args.dataset_name
    if dataset_args.datasets:
        dataset = get_dataset(dataset_args)
    elif name == ADDITION:
        dataset = {script_args.dataset_train_split: addition_dataset(seed=training_args.seed)}
    elif name and Path(name).is_file():
        dataset = load_dataset("json", data_files={script_args.dataset_train_split: name})
    elif name:
        dataset = load_dataset(name, name=script_args.dataset_config)
    else:
        raise SystemExit(f"lenvm grpo needs dataset_name (a dataset id, a JSONL file, or {ADDITION}).")
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}),
                                       "dtype": model_args.dtype or "auto"}
    shaped = bool(training_args.critic_model_path) and training_args.length_coef != 0
    trainer_cls = LengthShapedGRPOTrainer if shaped else GRPOTrainer
    trainer = trainer_cls(model=resolve_model(model_args.model_name_or_path), reward_funcs=reward_funcs,
                          args=training_args, train_dataset=as_prompts(dataset[script_args.dataset_train_split]),
                          peft_config=get_peft_config(model_args))
    print(f"[lenvm] {trainer_cls.__name__}" + (f" with LenVM {training_args.critic_model_path} "
                                               f"({training_args.length_shaping}, coef {training_args.length_coef})"
                                               if shaped else " (no length shaping)"))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    print(f"[lenvm] policy saved to {training_args.output_dir}")


# ------------------------------------------------------------------------------------------ merge
def merge(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lenvm merge", description=COMMANDS["merge"])
    p.add_argument("--checkpoint", required=True, help="LoRA LenVM checkpoint (adapter + value head)")
    p.add_argument("--output", required=True, help="where to write the merged full checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --output")
    a = p.parse_args(argv)

    from .modeling import merge_lora

    print(f"[lenvm] merged checkpoint written to {merge_lora(a.checkpoint, a.output, a.overwrite)}")
    return 0


# ------------------------------------------------------------------------------------------ eval
def evaluate(argv: list[str]) -> int:
    import importlib

    from .evaluation import EVALS

    if not argv or argv[0] not in EVALS:
        return menu(argv, "usage: lenvm eval NAME [--help] ...", EVALS, "evaluation")
    importlib.import_module(f".evaluation.{argv[0]}", __package__).main(argv[1:])
    return 0


def menu(argv: list[str], usage: str, choices: dict[str, str], kind: str) -> int:
    """Print the usage line and the choices; exit status 2 when ``argv[0]`` names an unknown one."""
    print(usage + "\n")
    width = max(map(len, choices)) + 2
    for name, what in choices.items():
        print(f"  {name:{width}s} {what}")
    if argv and argv[0] not in ("-h", "--help"):
        print(f"\nunknown {kind} {argv[0]!r}")
        return 2
    return 0


HANDLERS = {"quickstart": quickstart, "rollouts": rollouts, "train": train, "predict": predict,
            "generate": generate, "merge": merge, "grpo": grpo, "eval": evaluate,
            "demo": lambda argv: __import__("lenvm_rl.demo", fromlist=["main"]).main(argv)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in HANDLERS:
        return menu(argv, "usage: lenvm {" + ",".join(HANDLERS) + "} ...", COMMANDS, "command")
    return HANDLERS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
