"""Reward functions for TRL's own `trl grpo --config recipe.yaml` (by dotted path, e.g.
``reward_funcs: [lenvm_rl.rl.rewards.critic_length_return]``). TRL calls them as
``f(prompts=..., completions=..., completion_ids=..., **columns)``; each returns one float per completion.

For TRL's soft-overlong and cosine-scaled rewards use ``trl.rewards`` directly; they are not repeated here.
Group normalisation in GRPO removes any per-prompt constant, so a sequence-level length reward acts through
its differences between completions of the same prompt; the critic's bootstrap matters most for truncated
completions, whose true length is unknown.
"""

from __future__ import annotations

import os
from functools import lru_cache

CRITIC_ENV = "LENVM_CRITIC_PATH"


@lru_cache(maxsize=2)
def _load_critic(path: str):
    from ..critic import LengthCritic

    return LengthCritic.from_pretrained(path)


def critic_from_env():
    """The critic named by ``$LENVM_CRITIC_PATH`` (set it in the recipe's ``env:``), loaded once per process."""
    path = os.environ.get(CRITIC_ENV)
    if not path:
        raise RuntimeError(f"critic_length_return needs a LenVM checkpoint: set {CRITIC_ENV} (e.g. in the recipe's "
                           "`env:` mapping) to the checkpoint dir.")
    return _load_critic(path)


def critic_length_return(prompts, completion_ids, **kwargs) -> list[float]:
    """Length return of each completion, bootstrapped by the LenVM when truncated:

        R = -(1 - gamma ** L)                          ended with EOS (L tokens, EOS included)
        R = -(1 - gamma ** L) + gamma ** L * V(s_L)    cut at the length limit (V of the state it was cut in)

    In (-1, 0]: shorter is higher. gamma is the critic's. Prompts are rendered with the critic's chat template.
    """

    from ..critic import left_pad
    from ..data import encode_prompt
    from ..returns import remaining_to_value

    critic = critic_from_env()
    gamma, eos = critic.gamma, critic.tokenizer.eos_token_id
    rewards = remaining_to_value([len(ids) for ids in completion_ids], gamma).tolist()
    cut = [i for i, ids in enumerate(completion_ids) if len(ids) == 0 or ids[-1] != eos]
    if cut:
        rows = [encode_prompt(critic.tokenizer, prompts[i]) + list(completion_ids[i]) for i in cut]
        ids, mask = left_pad(rows, critic._pad_id())
        v_last = critic.values(ids, mask)[:, -1].double()
        for j, i in enumerate(cut):
            rewards[i] += gamma ** len(completion_ids[i]) * float(v_last[j])
    return rewards


def group_length_reward(prompts, completion_ids, **kwargs) -> list[float]:
    """Token-counting group length reward in the style of Kimi k1.5 (open-r1's ``len_reward`` counts characters):

        lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min)    over the completions of the same prompt

    so the shortest of a group gets +0.5 and the longest -0.5 (0 for all when the lengths are equal). Kimi
    gives incorrect answers only ``min(0, lambda)``; without a correctness signal here, pair it with a task reward.
    """
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(repr(p), []).append(i)
    rewards = [0.0] * len(completion_ids)
    for members in groups.values():
        lengths = [len(completion_ids[i]) for i in members]
        lo, hi = min(lengths), max(lengths)
        for i, n in zip(members, lengths):
            rewards[i] = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
    return rewards
