"""Reward functions for TRL trainers (GRPO, RLOO), by dotted path or through :func:`get_reward_funcs`.

TRL calls them as ``f(prompts=..., completions=..., completion_ids=..., **columns)``; each returns one float per
completion. A length reward here is an *addition* to the task reward (list both in ``reward_funcs``).

    critic_length_return      -(1 - gamma ** L), bootstrapped by the LenVM when truncated (sequence level)
    group_length_reward       Kimi k1.5's group length reward, ungated (pair it with a task reward)
    kimi_length_reward(...)   the same with Kimi's correctness gate: wrong answers get min(0, lambda)
    l1_max_length_reward(...) L1-Max: c * clip(0.5 + (budget - L) / (2 budget), 0, 1)
    lenvm_seq_reward(...)     c * beta * critic_length_return: the sequence-level, gated use of the LenVM
    gated_critic_length_return  the same, configured by environment variables (for dotted-path recipes)
    soft_overlong_reward(...) DAPO's soft overlong punishment (TRL's)

The gated ones take the task reward ``c`` as a function (``gate``) and count a completion correct when
``gate >= threshold``. Group statistics are computed over whole prompt groups: under ``torch.distributed``
the completions of every process are gathered first, since TRL may split a group across processes.
For per-token shaping with a LenVM use ``LengthShapedGRPOTrainer``; TRL's RLOO uses a sequence-level
importance ratio, so it takes the sequence-level rewards here.
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
        raise RuntimeError(
            f"critic_length_return needs a LenVM checkpoint: set {CRITIC_ENV} (e.g. in the recipe's "
            "`env:` mapping) to the checkpoint dir."
        )
    return _load_critic(path)


@lru_cache(maxsize=2)
def _eos_ids(path: str, tokenizer_eos: int) -> frozenset[int]:
    """Every id that ends a generation: the tokenizer's EOS and the checkpoint's generation-config EOS ids
    (TRL stops on the union of both, so a completion ending in either one terminated)."""
    from transformers import GenerationConfig

    ids = {tokenizer_eos}
    try:
        extra = GenerationConfig.from_pretrained(path).eos_token_id
    except (OSError, ValueError):
        extra = None
    ids.update([extra] if isinstance(extra, int) else (extra or []))
    return frozenset(ids)


def _prompt_ids(critic, prompt) -> list[int]:
    """The prompt as TRL renders it: plain text as it is; conversational prompts as the critic was trained
    (its chat template unless its checkpoint says ``use_chat_template: false``)."""
    if isinstance(prompt, str):
        return critic.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return critic._encode_prompts([prompt])[0]  # honours the critic's use_chat_template


def critic_length_return(prompts, completion_ids, critic=None, **kwargs) -> list[float]:
    """Length return of each completion, bootstrapped by the LenVM when truncated:

        R = -(1 - gamma ** L)                          ended with EOS (L tokens, EOS included)
        R = -(1 - gamma ** L) + gamma ** L * V(s_L)    cut at the length limit (V of the state it was cut in)

    In (-1, 0]: shorter is higher. gamma is the critic's (``critic`` or ``$LENVM_CRITIC_PATH``).
    """
    from ..critic import left_pad
    from ..returns import remaining_to_value

    critic = critic or critic_from_env()
    gamma = critic.gamma
    eos = _eos_ids(critic.path or "", critic.tokenizer.eos_token_id)
    rewards = remaining_to_value([len(ids) for ids in completion_ids], gamma).tolist()
    cut = [i for i, ids in enumerate(completion_ids) if len(ids) == 0 or ids[-1] not in eos]
    if cut:
        rows = [_prompt_ids(critic, prompts[i]) + list(completion_ids[i]) for i in cut]
        ids, mask = left_pad(rows, critic._pad_id())
        v_last = critic.values(ids, mask)[:, -1].double()
        for j, i in enumerate(cut):
            rewards[i] += gamma ** len(completion_ids[i]) * float(v_last[j])
    return rewards


# ----------------------------------------------------------------------------------------- whole groups
def _gather(values: list) -> tuple[list, int]:
    """All processes' values in process order and this process's offset (a no-op without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values), 0
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(values))
    offset = sum(len(p) for p in parts[: dist.get_rank()])
    return [v for p in parts for v in p], offset


def _groups(prompts) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(repr(p), []).append(i)
    return list(groups.values())


def _kimi_lambda(lengths: list[int]) -> list[float]:
    lo, hi = min(lengths), max(lengths)
    return [0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo) for n in lengths]


def group_length_reward(prompts, completion_ids, **kwargs) -> list[float]:
    """Token-counting group length reward in the style of Kimi k1.5 (open-r1's ``len_reward`` counts characters):

        lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min)    over the completions of the same prompt

    so the shortest of a group gets +0.5 and the longest -0.5 (0 for all when the lengths are equal). Ungated:
    Kimi gives incorrect answers only ``min(0, lambda)``; use :func:`kimi_length_reward` for that.
    """
    everything, offset = _gather(list(zip(map(repr, prompts), map(len, completion_ids))))
    rewards = [0.0] * len(everything)
    for members in _groups([p for p, _ in everything]):
        for i, lam in zip(members, _kimi_lambda([everything[i][1] for i in members])):
            rewards[i] = lam
    return rewards[offset : offset + len(prompts)]


def _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs) -> list[bool]:
    scores = gate(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
    return [s is not None and s >= threshold for s in scores]


def _named(fn, name: str):
    fn.__name__ = fn.__qualname__ = name
    return fn


def kimi_length_reward(gate, threshold: float = 0.5, name: str = "kimi_length_reward"):
    """Kimi k1.5's length reward with its correctness gate, over whole prompt groups:

    lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min);   reward = lambda_i if correct else min(0, lambda_i)
    """

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        everything, offset = _gather(list(zip(map(repr, prompts), map(len, completion_ids), correct)))
        out = [0.0] * len(everything)
        for members in _groups([p for p, _, _ in everything]):
            for i, lam in zip(members, _kimi_lambda([everything[i][1] for i in members])):
                out[i] = lam if everything[i][2] else min(0.0, lam)
        return out[offset : offset + len(prompts)]

    return _named(reward, name)


def l1_max_length_reward(gate, budget: int, threshold: float = 0.5, name: str = "l1_max_length_reward"):
    """L1-Max-style fixed-budget reward (Aggarwal and Welleck, 2025): ``c * clip(0.5 + (n - L) / (2 n), 0, 1)``
    with ``n = budget`` tokens: 1 for an empty answer, 0.5 at the budget, 0 at twice the budget."""
    if budget < 1:
        raise ValueError(f"budget must be a positive token count, got {budget}")

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        return [
            float(c) * min(1.0, max(0.0, 0.5 + (budget - len(ids)) / (2 * budget)))
            for c, ids in zip(correct, completion_ids)
        ]

    return _named(reward, name)


def lenvm_seq_reward(gate, beta: float, critic=None, threshold: float = 0.5, name: str = "lenvm_seq_reward"):
    """``c * beta * critic_length_return``: the LenVM used at the sequence level with the same gate. Added to
    the task reward ``c`` it gives ``c * (1 + beta * R)``; the control that shows whether per-token credit
    (``LengthShapedGRPOTrainer``'s ``relative`` mode) adds anything over the same critic's sequence return."""

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        returns = critic_length_return(prompts, completion_ids, critic=critic)
        return [float(c) * beta * r for c, r in zip(correct, returns)]

    return _named(reward, name)


GATE_ENV, BETA_ENV = "LENVM_GATE_REWARD", "LENVM_SEQ_BETA"


def gated_critic_length_return(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """:func:`lenvm_seq_reward` for recipes that name rewards by dotted path (``trl rloo`` / ``trl grpo``):
    ``c * beta * critic_length_return`` with the critic from ``$LENVM_CRITIC_PATH``, the gate from
    ``$LENVM_GATE_REWARD`` (a task name such as ``opposites``, or a dotted path) and beta from
    ``$LENVM_SEQ_BETA`` (default 1). Set them in the recipe's ``env:`` mapping."""
    import importlib

    name = os.environ.get(GATE_ENV)
    if not name:
        raise RuntimeError(
            f"gated_critic_length_return needs {GATE_ENV}: a task reward name ({sorted(_task_rewards())}) "
            "or a dotted path, e.g. in the recipe's `env:` mapping."
        )
    gate = _task_rewards().get(name)
    if gate is None:
        module, _, attr = name.rpartition(".")
        gate = getattr(importlib.import_module(module), attr)
    beta = float(os.environ.get(BETA_ENV, "1.0"))
    return lenvm_seq_reward(gate, beta)(prompts, completions, completion_ids, **kwargs)


def soft_overlong_reward(max_completion_len: int, soft_punish_cache: int):
    """DAPO's soft overlong punishment (TRL's ``get_soft_overlong_punishment``): 0 up to ``max - cache`` tokens,
    then linear down to -1 at ``max``."""
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_completion_len=max_completion_len, soft_punish_cache=soft_punish_cache)


# ----------------------------------------------------------------------------------------- registry
def _task_rewards():
    from .tasks import addition_reward, gsm8k_reward, opposites_reward

    return {"addition": addition_reward, "gsm8k": gsm8k_reward, "opposites": opposites_reward}


def get_reward_funcs(names, task: str | None = None, **params) -> list:
    """Reward functions by name, open-r1 style: ``get_reward_funcs(["opposites", "kimi"], task="opposites")``.

    Names: the tasks (``addition``, ``gsm8k``, ``opposites``), ``critic_length_return``, ``group_length``,
    and the gated ones ``kimi``, ``l1_max`` (``budget``), ``lenvm_seq`` (``beta``, ``critic``),
    ``soft_overlong`` (``max_completion_len``, ``soft_punish_cache``); the gated ones use ``task``'s reward.
    """
    tasks = _task_rewards()
    gate = tasks.get(task)
    threshold = params.get("threshold", 0.5)

    def need_gate(name):
        if gate is None:
            raise ValueError(f"reward {name!r} is gated by a task reward: pass task= one of {sorted(tasks)}")
        return gate

    builders = {
        "critic_length_return": lambda: critic_length_return,
        "group_length": lambda: group_length_reward,
        "kimi": lambda: kimi_length_reward(need_gate("kimi"), threshold),
        "l1_max": lambda: l1_max_length_reward(need_gate("l1_max"), params["budget"], threshold),
        "lenvm_seq": lambda: lenvm_seq_reward(need_gate("lenvm_seq"), params["beta"], params.get("critic"), threshold),
        "soft_overlong": lambda: soft_overlong_reward(params["max_completion_len"], params["soft_punish_cache"]),
        **{k: (lambda f=f: f) for k, f in tasks.items()},
    }
    out = []
    for name in names:
        if name not in builders:
            raise ValueError(f"unknown reward {name!r}; choose from {sorted(builders)}")
        try:
            out.append(builders[name]())
        except KeyError as missing:
            raise ValueError(f"reward {name!r} needs the parameter {missing}") from None
    return out


# ----------------------------------------------------------------------------------------- ShorterBetter
def shorter_better_reward(gate, beta: float = 0.01, threshold: float = 0.5, name: str = "shorter_better_reward"):
    """ShorterBetter's length term (Yi, Wang and Li, 2025), over whole prompt groups:

        SOL_g = min {L_i : i correct in g}   (else the mean length of g);   reward_i = -beta * |L_i - SOL_g|

    The paper's reward is ``alpha * c_i - beta * |L_i - SOL_g|``: list the task reward beside this one (its weight
    is alpha). Every answer, right or wrong, is pulled toward the group's shortest correct length.
    """
    if beta <= 0:
        raise ValueError(
            f"beta must be positive (the weight of the distance to the shortest correct answer), got {beta}"
        )

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        everything, offset = _gather(list(zip(map(repr, prompts), map(len, completion_ids), correct)))
        out = [0.0] * len(everything)
        for members in _groups([p for p, _, _ in everything]):
            right = [everything[i][1] for i in members if everything[i][2]]
            sol = min(right) if right else sum(everything[i][1] for i in members) / len(members)
            for i in members:
                out[i] = -beta * abs(everything[i][1] - sol)
        return out[offset : offset + len(prompts)]

    return _named(reward, name)
