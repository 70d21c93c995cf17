"""What `lenvm grpo` runs once its arguments are parsed: the reward functions by name, the built-in datasets, and
TRL's ``GRPOTrainer`` (or :class:`~lenvm_rl.rl.LengthShapedGRPOTrainer` when a LenVM shapes the length), as
``trl/scripts/grpo.py`` does for ``trl grpo``. Kept out of :mod:`lenvm_rl.cli`, which imports nothing heavy."""

from __future__ import annotations

OPPOSITES_DATASET = "lenvm:opposites"  # beside tasks.ADDITION ("lenvm:addition")
LEGACY_REWARDS = {
    "addition_reward": "addition",
    "gsm8k_reward": "gsm8k",
    "opposites_reward": "opposites",
    "group_length_reward": "group_length",
    "kimi_length_reward": "kimi",
    "l1_max_length_reward": "l1_max",
    "lenvm_seq_reward": "lenvm_seq",
    "soft_overlong_reward": "soft_overlong",
}


def builtin_task(dataset_name: str | None) -> str | None:
    """The task of a built-in dataset name (``lenvm:addition`` -> ``addition``), else None."""
    from .rl.tasks import ADDITION

    return {ADDITION: "addition", OPPOSITES_DATASET: "opposites"}.get(dataset_name)


def resolve_reward(name: str, task: str | None = None, config=None):
    """A reward function by name:

    * a short name of :func:`lenvm_rl.rl.rewards.get_reward_funcs` (``opposites``, ``group_length``, ``kimi``,
      ``l1_max``, ``lenvm_seq``, ``soft_overlong``, ...; the ``*_reward`` spellings too), with its settings from
      ``config`` (a :class:`~lenvm_rl.rl.reward_config.LengthRewardConfig`: ``lenvm grpo``'s flags / YAML keys);
      gated ones (``kimi``) use ``config.reward_gate``, else ``task``'s reward, as the gate;
    * one of TRL's own (``accuracy_reward``, ...);
    * a dotted import path, as ``trl grpo`` takes.
    """
    import importlib

    if "." in name:
        module, attr = name.rsplit(".", 1)
        return getattr(importlib.import_module(module), attr)
    from .rl.rewards import get_reward_funcs

    short = LEGACY_REWARDS.get(name, name)
    try:
        return get_reward_funcs([short], task=task, config=config)[0]
    except ValueError as e:
        if not str(e).startswith("unknown reward"):
            raise  # a known reward that needs a task or parameters
        known = str(e)
    import trl.rewards

    if hasattr(trl.rewards, name):
        return getattr(trl.rewards, name)  # TRL's own, e.g. accuracy_reward
    raise ValueError(f"{known}, {sorted(LEGACY_REWARDS)}, one of TRL's rewards, or a dotted import path")


def builtin_dataset(name: str, split: str, seed: int):
    """``lenvm:addition`` / ``lenvm:opposites`` (its training words only) as ``{split: Dataset}``, else None."""
    from .rl.tasks import ADDITION, addition_dataset, opposites_dataset, opposites_split

    if name == ADDITION:
        return {split: addition_dataset(seed=seed)}
    if name == OPPOSITES_DATASET:
        return {split: opposites_dataset(opposites_split()[0], seed=seed)}  # the evaluation words stay unseen
    return None


def run_grpo(script_args, training_args, model_args, dataset_args, reward_args=None) -> None:
    from pathlib import Path

    from datasets import load_dataset
    from trl import GRPOTrainer, get_dataset, get_peft_config

    from .defaults import resolve_model
    from .rl import LengthShapedGRPOTrainer
    from .rl.tasks import ADDITION, as_prompts

    if not script_args.reward_funcs:
        raise SystemExit(
            "lenvm grpo needs reward_funcs (short names such as addition_reward, opposites_reward, "
            "group_length_reward, critic_length_return, or dotted paths)."
        )
    from .rl.reward_config import LengthRewardConfig

    name = script_args.dataset_name
    reward_args = reward_args or LengthRewardConfig()
    if reward_args.overlong_max_length is None:  # soft_overlong punishes up to the run's own cap
        reward_args.overlong_max_length = training_args.max_completion_length
    reward_funcs = [resolve_reward(r, builtin_task(name), reward_args) for r in script_args.reward_funcs]
    if dataset_args.datasets:
        dataset = get_dataset(dataset_args)
    elif name and (builtin := builtin_dataset(name, script_args.dataset_train_split, training_args.seed)):
        dataset = builtin
    elif name and Path(name).is_file():
        dataset = load_dataset("json", data_files={script_args.dataset_train_split: name})
    elif name:
        dataset = load_dataset(name, name=script_args.dataset_config)
    else:
        raise SystemExit(
            f"lenvm grpo needs dataset_name (a dataset id, a JSONL file, {ADDITION} or {OPPOSITES_DATASET})."
        )
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype or "auto"}
    shaped = bool(training_args.critic_model_path) and training_args.length_coef != 0
    trainer_cls = LengthShapedGRPOTrainer if shaped else GRPOTrainer
    trainer = trainer_cls(
        model=resolve_model(model_args.model_name_or_path),
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=as_prompts(dataset[script_args.dataset_train_split]),
        peft_config=get_peft_config(model_args),
    )
    print(
        f"[lenvm] {trainer_cls.__name__}"
        + (
            f" with LenVM {training_args.critic_model_path} "
            f"({training_args.length_shaping}, coef {training_args.length_coef})"
            if shaped
            else " (no length shaping)"
        )
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    print(f"[lenvm] policy saved to {training_args.output_dir}")
