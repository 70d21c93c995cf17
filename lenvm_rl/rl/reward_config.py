"""LengthRewardConfig: the settings of the length rewards in :mod:`lenvm_rl.rl.rewards`.

One dataclass, two ways in: ``lenvm grpo`` parses it (``--l1_budget 16`` or ``l1_budget: 16`` in its YAML), and
a ``trl grpo`` / ``trl rloo`` recipe, which can only name a reward by dotted path, sets the environment variable
of each field in its ``env:`` mapping (``LENVM_L1_BUDGET: "16"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

ENV = {  # field -> the environment variable a dotted-path reward reads it from
    "reward_gate": "LENVM_GATE_REWARD",
    "reward_gate_threshold": "LENVM_GATE_THRESHOLD",
    "reward_critic_path": "LENVM_CRITIC_PATH",
    "seq_beta": "LENVM_SEQ_BETA",
    "l1_budget": "LENVM_L1_BUDGET",
    "overlong_max_length": "LENVM_OVERLONG_MAX_LENGTH",
    "overlong_cache": "LENVM_OVERLONG_CACHE",
}


@dataclass
class LengthRewardConfig:
    r"""
    Settings of the length rewards (``kimi``, ``l1_max``, ``lenvm_seq``, ``soft_overlong``,
    ``critic_length_return``). Each field is read from the environment variable named beside it when a reward
    is called by dotted path.

    Parameters:
        reward_gate (`str` or `None`, env ``LENVM_GATE_REWARD``):
            The task reward that says an answer is correct, for the gated rewards (``kimi``, ``l1_max``,
            ``lenvm_seq``): a task name (``addition``, ``gsm8k``, ``opposites``), its ``*_reward`` spelling, or a
            dotted path. ``lenvm grpo`` defaults to the task of a built-in dataset.
        reward_gate_threshold (`float`, *optional*, defaults to `0.5`, env ``LENVM_GATE_THRESHOLD``):
            An answer is correct when its gate reward is at least this.
        reward_critic_path (`str` or `None`, env ``LENVM_CRITIC_PATH``):
            LenVM checkpoint of ``critic_length_return`` and ``lenvm_seq`` (same vocabulary as the policy).
        seq_beta (`float`, *optional*, defaults to `1.0`, env ``LENVM_SEQ_BETA``):
            ``beta`` of ``lenvm_seq``: ``c * beta * critic_length_return``.
        l1_budget (`int` or `None`, env ``LENVM_L1_BUDGET``):
            Token budget ``n`` of ``l1_max`` (answer tokens, EOS not counted).
        overlong_max_length (`int` or `None`, env ``LENVM_OVERLONG_MAX_LENGTH``):
            ``max_completion_len`` of ``soft_overlong`` (TRL's; generated tokens, EOS included, as the cap counts
            them). ``lenvm grpo`` defaults to ``max_completion_length``.
        overlong_cache (`int` or `None`, env ``LENVM_OVERLONG_CACHE``):
            ``soft_punish_cache`` of ``soft_overlong``: the punishment ramps from ``max - cache`` tokens to ``max``.
    """

    reward_gate: str | None = field(
        default=None,
        metadata={"help": "Task reward that marks an answer correct (task name or dotted path)."},
    )
    reward_gate_threshold: float = field(default=0.5, metadata={"help": "Correct when the gate reward is >= this."})
    reward_critic_path: str | None = field(
        default=None,
        metadata={"help": "LenVM of critic_length_return and lenvm_seq."},
    )
    seq_beta: float = field(default=1.0, metadata={"help": "beta of lenvm_seq."})
    l1_budget: int | None = field(default=None, metadata={"help": "Token budget of l1_max (EOS not counted)."})
    overlong_max_length: int | None = field(
        default=None,
        metadata={"help": "max_completion_len of soft_overlong."},
    )
    overlong_cache: int | None = field(default=None, metadata={"help": "soft_punish_cache of soft_overlong."})

    @classmethod
    def from_env(cls) -> LengthRewardConfig:
        """The settings given by environment variables (a recipe's ``env:``); unset ones keep their defaults."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(ENV[f.name])
            if raw is None or raw == "":
                continue
            kind = str(f.type)
            try:
                values[f.name] = float(raw) if "float" in kind else int(raw) if "int" in kind else raw
            except ValueError:
                raise ValueError(f"{ENV[f.name]}={raw!r} is not a number; {f.name} needs one") from None
        return cls(**values)

    @staticmethod
    def env_name(name: str) -> str:
        """The environment variable of field ``name``."""
        return ENV[name]
