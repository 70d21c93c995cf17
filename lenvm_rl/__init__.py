"""lenvm-rl: Length Value Models for the Hugging Face / TRL stack.

The public names below load lazily, as in transformers and TRL: ``import lenvm_rl`` imports neither torch,
transformers nor trl (so ``lenvm --help`` stays fast); ``lenvm_rl.LengthCritic`` imports :mod:`lenvm_rl.critic`
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Submodule -> the public names it provides. To export another name, add it here and to the TYPE_CHECKING block
# (tests/test_public_api.py checks that every public reward function of lenvm_rl.rl.rewards is listed).
_IMPORT_STRUCTURE: dict[str, list[str]] = {
    "modeling": ["LengthValueModel"],
    "trainer": ["LengthValueConfig", "LengthValueTrainer"],
    "critic": ["LengthCritic", "TokenizerMismatchError"],
    "rl": ["LengthShapedGRPOConfig", "LengthShapedGRPOTrainer"],
    "rl.rewards": [
        "critic_length_return",
        "group_length_reward",
        "kimi_length_reward",
        "l1_max_length_reward",
        "lenvm_seq_reward",
        "gated_critic_length_return",
        "soft_overlong_reward",
        "get_kimi_length_reward",
        "get_l1_max_length_reward",
        "get_lenvm_seq_reward",
        "get_soft_overlong_reward",
        "get_reward_funcs",
    ],
    "rl.reward_config": ["LengthRewardConfig"],
    "rl.tasks": ["opposites_reward", "addition_reward", "gsm8k_reward"],
    "decoding": ["LengthGuidedLogitsProcessor", "generate_with_length"],
    "scoring": ["TreeScorer"],
    "returns": [
        "remaining_to_value",
        "value_to_remaining",
        "value_to_length",
        "completion_targets",
        "gamma_from_lengths",
        "return_consistent_length",
        "td_residuals",
        "gae",
        "length_credit",
        "correct_group_means",
        "relative_length_term",
    ],
}
_NAME_TO_MODULE = {name: module for module, names in _IMPORT_STRUCTURE.items() for name in names}

__all__ = list(_NAME_TO_MODULE)


def __getattr__(name: str):
    module = _NAME_TO_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .critic import LengthCritic, TokenizerMismatchError
    from .decoding import LengthGuidedLogitsProcessor, generate_with_length
    from .modeling import LengthValueModel
    from .returns import (
        completion_targets,
        correct_group_means,
        gae,
        gamma_from_lengths,
        length_credit,
        relative_length_term,
        remaining_to_value,
        return_consistent_length,
        td_residuals,
        value_to_length,
        value_to_remaining,
    )
    from .rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
    from .rl.reward_config import LengthRewardConfig
    from .rl.rewards import (
        critic_length_return,
        gated_critic_length_return,
        get_kimi_length_reward,
        get_l1_max_length_reward,
        get_lenvm_seq_reward,
        get_reward_funcs,
        get_soft_overlong_reward,
        group_length_reward,
        kimi_length_reward,
        l1_max_length_reward,
        lenvm_seq_reward,
        soft_overlong_reward,
    )
    from .rl.tasks import addition_reward, gsm8k_reward, opposites_reward
    from .scoring import TreeScorer
    from .trainer import LengthValueConfig, LengthValueTrainer
