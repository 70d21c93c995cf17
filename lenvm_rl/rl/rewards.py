"""Reward functions for TRL trainers (GRPO, RLOO), by dotted path or through :func:`get_reward_funcs`.

TRL calls them as ``f(prompts=..., completions=..., completion_ids=..., **columns)``; each returns one float per
completion. A length reward here is an *addition* to the task reward (list both in ``reward_funcs``).

    critic_length_return      -(1 - gamma ** (L + 1)), bootstrapped by the LenVM when truncated (sequence level)
    group_length_reward       Kimi k1.5's group length reward, ungated (pair it with a task reward)
    kimi_length_reward        the same with Kimi's correctness gate: wrong answers get min(0, lambda)
    l1_max_length_reward      L1-Max: c * clip(0.5 + (budget - L) / (2 budget), 0, 1)
    lenvm_seq_reward          c * beta * critic_length_return: the sequence-level, gated use of the LenVM
    soft_overlong_reward      DAPO's soft overlong punishment (TRL's)

``L`` counts an answer's tokens, EOS excluded (docs/method.md). The rewards with settings read them from a
:class:`~lenvm_rl.rl.reward_config.LengthRewardConfig`: from environment variables when TRL calls them by dotted
path (set them in the recipe's ``env:``), from flags / YAML keys under ``lenvm grpo``. ``get_<name>(...)`` builds
one with explicit settings (``get_kimi_length_reward(gate)``), as TRL's ``get_soft_overlong_punishment`` does.

The gated ones take the task reward ``c`` as a function (``gate``) and count a completion correct when
``gate >= threshold``. Group statistics are computed over whole prompt groups: under ``torch.distributed``
the completions of every process are gathered first, since TRL may split a group across processes.
For per-token shaping with a LenVM use ``LengthShapedGRPOTrainer``; TRL's RLOO uses a sequence-level
importance ratio, so it takes the sequence-level rewards here.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from .reward_config import LengthRewardConfig

CRITIC_ENV = LengthRewardConfig.env_name("reward_critic_path")  # LENVM_CRITIC_PATH


@lru_cache(maxsize=2)
def _load_critic(path: str):
    from ..critic import LengthCritic

    return LengthCritic.from_pretrained(path)


def critic_from_env():
    """The critic named by ``$LENVM_CRITIC_PATH`` (set it in the recipe's ``env:``), loaded once per process."""
    path = LengthRewardConfig.from_env().reward_critic_path
    if not path:
        raise RuntimeError(
            f"critic_length_return needs a LenVM checkpoint: set {CRITIC_ENV} (e.g. in the recipe's "
            "`env:` mapping) to the checkpoint dir, or pass --reward_critic_path to `lenvm grpo`."
        )
    return _load_critic(path)


def policy_eos_token_ids(kwargs: dict) -> frozenset[int] | None:
    """The EOS ids the trainer stops generation on, from a reward function's keyword arguments: ``eos_token_ids``
    when given, else TRL's trainer's. TRL passes reward functions no EOS ids, but its ``log_metric`` argument is
    a method of the trainer (GRPO and RLOO alike), which holds them as ``eos_token_ids``."""
    ids = kwargs.get("eos_token_ids")
    if ids is None:
        ids = getattr(getattr(kwargs.get("log_metric"), "__self__", None), "eos_token_ids", None)
    if ids is None:
        return None
    return frozenset([ids] if isinstance(ids, int) else ids)


def _prompt_ids(critic, prompt) -> list[int]:
    """The prompt as TRL renders it: plain text as it is; conversational prompts as the critic was trained
    (its chat template unless its checkpoint says ``use_chat_template: false``)."""
    if isinstance(prompt, str):
        return critic.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return critic._encode_prompts([prompt])[0]  # honours the critic's use_chat_template


def critic_length_return(prompts, completion_ids, critic=None, **kwargs) -> list[float]:
    """Length return of each completion, bootstrapped by the LenVM when truncated:

        R = -(1 - gamma ** n)                          ended with EOS (n = L + 1 steps: L answer tokens, EOS)
        R = -(1 - gamma ** n) + gamma ** n * V(s_n)    cut at the length limit (n tokens, V of the state it was cut in)

    In (-1, 0]: shorter is higher. gamma is the critic's (``critic`` or ``$LENVM_CRITIC_PATH``). A completion
    ended when its last token is one of the trainer's EOS ids (:func:`policy_eos_token_ids`), else one of the
    critic's (its tokenizer's and its saved generation config's, which match a policy of its family).
    """
    from ..critic import left_pad
    from ..returns import remaining_to_value

    critic = critic or critic_from_env()
    gamma = critic.gamma
    eos = policy_eos_token_ids(kwargs) or critic.eos_token_ids
    rewards = remaining_to_value([len(ids) for ids in completion_ids], gamma).tolist()
    cut = [i for i, ids in enumerate(completion_ids) if len(ids) == 0 or ids[-1] not in eos]
    if cut:
        rows = [_prompt_ids(critic, prompts[i]) + list(completion_ids[i]) for i in cut]
        ids, mask = left_pad(rows, critic._pad_id())
        v_last = critic.values(ids, mask)[:, -1].double()
        for j, i in enumerate(cut):
            rewards[i] += gamma ** len(completion_ids[i]) * float(v_last[j])
    return rewards


def answer_length(ids, eos) -> int:
    """Tokens of an answer, EOS excluded: TRL's ``completion_ids`` end with the EOS of a finished answer."""
    return len(ids) - (1 if len(ids) and ids[-1] in eos else 0)


def _answer_lengths(completion_ids, kwargs) -> list[int]:
    """Answer lengths with the trainer's EOS ids; called outside a trainer without ``eos_token_ids=``, every
    token counts."""
    eos = policy_eos_token_ids(kwargs) or frozenset()
    return [answer_length(ids, eos) for ids in completion_ids]


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
    lengths = _answer_lengths(completion_ids, kwargs)
    everything, offset = _gather(list(zip(map(repr, prompts), lengths)))
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


def get_kimi_length_reward(gate, threshold: float = 0.5, name: str = "kimi_length_reward"):
    """Kimi k1.5's length reward with its correctness gate, over whole prompt groups:

    lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min);   reward = lambda_i if correct else min(0, lambda_i)
    """

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        lengths = _answer_lengths(completion_ids, kwargs)
        everything, offset = _gather(list(zip(map(repr, prompts), lengths, correct)))
        out = [0.0] * len(everything)
        for members in _groups([p for p, _, _ in everything]):
            for i, lam in zip(members, _kimi_lambda([everything[i][1] for i in members])):
                out[i] = lam if everything[i][2] else min(0.0, lam)
        return out[offset : offset + len(prompts)]

    return _named(reward, name)


def get_l1_max_length_reward(gate, budget: int, threshold: float = 0.5, name: str = "l1_max_length_reward"):
    """L1-Max-style fixed-budget reward (Aggarwal and Welleck, 2025): ``c * clip(0.5 + (n - L) / (2 n), 0, 1)``
    with ``n = budget`` and ``L`` answer tokens (EOS not counted): 1 for an empty answer, 0.5 at the budget,
    0 at twice the budget."""
    if budget is None or int(budget) != budget or budget < 1:
        raise ValueError(f"budget must be a positive whole number of tokens, got {budget!r}")

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        lengths = _answer_lengths(completion_ids, kwargs)
        return [float(c) * min(1.0, max(0.0, 0.5 + (budget - n) / (2 * budget))) for c, n in zip(correct, lengths)]

    return _named(reward, name)


def get_lenvm_seq_reward(gate, beta: float, critic=None, threshold: float = 0.5, name: str = "lenvm_seq_reward"):
    """``c * beta * critic_length_return``: the LenVM used at the sequence level with the same gate. Added to
    the task reward ``c`` it gives ``c * (1 + beta * R)``; the control that shows whether per-token credit
    (``LengthShapedGRPOTrainer``'s ``relative`` mode) adds anything over the same critic's sequence return.
    ``critic``: a :class:`~lenvm_rl.critic.LengthCritic`, else ``$LENVM_CRITIC_PATH``'s."""

    def reward(prompts, completions, completion_ids, **kwargs):
        correct = _gate_values(gate, threshold, prompts, completions, completion_ids, kwargs)
        returns = critic_length_return(prompts, completion_ids, critic=critic, **kwargs)
        return [float(c) * beta * r for c, r in zip(correct, returns)]

    return _named(reward, name)


def get_soft_overlong_reward(max_completion_len: int, soft_punish_cache: int):
    """DAPO's soft overlong punishment (TRL's ``get_soft_overlong_punishment``): 0 up to ``max - cache`` tokens,
    then linear down to -1 at ``max`` (generated tokens, EOS included, as TRL's cap counts them)."""
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_completion_len=max_completion_len, soft_punish_cache=soft_punish_cache)


# ----------------------------------------------------------------------------------------- by dotted path
def _from_env(name: str):
    return _build(name, LengthRewardConfig.from_env(), task=None)


def kimi_length_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """:func:`get_kimi_length_reward` for recipes that name rewards by dotted path: the gate from
    ``$LENVM_GATE_REWARD`` (threshold ``$LENVM_GATE_THRESHOLD``, default 0.5)."""
    return _from_env("kimi")(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)


def l1_max_length_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """:func:`get_l1_max_length_reward` for recipes that name rewards by dotted path: the budget from
    ``$LENVM_L1_BUDGET``, the gate from ``$LENVM_GATE_REWARD``."""
    return _from_env("l1_max")(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)


def lenvm_seq_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """:func:`get_lenvm_seq_reward` for recipes that name rewards by dotted path (``trl rloo`` / ``trl grpo``):
    ``c * beta * critic_length_return`` with the critic from ``$LENVM_CRITIC_PATH``, the gate from
    ``$LENVM_GATE_REWARD`` (a task name such as ``opposites``, or a dotted path) and beta from
    ``$LENVM_SEQ_BETA`` (default 1). Set them in the recipe's ``env:`` mapping."""
    return _from_env("lenvm_seq")(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)


def gated_critic_length_return(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """:func:`lenvm_seq_reward` under the name the committed RLOO recipe and its logs use."""
    return lenvm_seq_reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)


def soft_overlong_reward(completion_ids, **kwargs) -> list[float]:
    """:func:`get_soft_overlong_reward` for recipes that name rewards by dotted path: ``max_completion_len``
    from ``$LENVM_OVERLONG_MAX_LENGTH`` (set it to the run's ``max_completion_length``), the cache from
    ``$LENVM_OVERLONG_CACHE``."""
    return _from_env("soft_overlong")(completion_ids=completion_ids, **kwargs)


# ----------------------------------------------------------------------------------------- registry
def _task_rewards():
    from .tasks import addition_reward, gsm8k_reward, opposites_reward

    return {"addition": addition_reward, "gsm8k": gsm8k_reward, "opposites": opposites_reward}


def resolve_gate(name: str):
    """A task reward by task name (``opposites``), its function name (``opposites_reward``) or dotted path."""
    tasks = _task_rewards()
    short = name.removesuffix("_reward")
    if short in tasks:
        return tasks[short]
    if "." in name:
        module, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    raise ValueError(f"unknown gate reward {name!r}: a task name ({sorted(tasks)}) or a dotted import path")


NEEDS = {  # the settings each reward cannot do without
    "kimi": ("reward_gate",),
    "l1_max": ("reward_gate", "l1_budget"),
    "lenvm_seq": ("reward_gate",),
    "soft_overlong": ("overlong_max_length", "overlong_cache"),
}


def _build(name: str, config: LengthRewardConfig, task: str | None, critic=None):
    tasks = _task_rewards()
    if name in tasks:
        return tasks[name]
    if name == "critic_length_return":
        if critic is None and config.reward_critic_path is None:
            return critic_length_return  # reads $LENVM_CRITIC_PATH when called
        critic = critic or _load_critic(config.reward_critic_path)
        return _named(
            lambda prompts, completion_ids, **kw: critic_length_return(prompts, completion_ids, critic, **kw), name
        )
    if name == "group_length":
        return group_length_reward
    if name not in NEEDS:
        raise ValueError(
            f"unknown reward {name!r}; choose from {sorted([*tasks, *NEEDS, 'critic_length_return', 'group_length'])}"
        )
    gate_name = config.reward_gate or task
    missing = [f for f in NEEDS[name] if (gate_name if f == "reward_gate" else getattr(config, f)) is None]
    if missing:
        how = "; ".join(
            f"--{f} for `lenvm grpo`, ${LengthRewardConfig.env_name(f)} in a recipe's env:" for f in missing
        )
        gated = " is gated by a task reward and" if "reward_gate" in missing else ""
        raise ValueError(f"reward {name!r}{gated} needs {', '.join(missing)} ({how})")
    gate = resolve_gate(gate_name) if gate_name else None
    t = config.reward_gate_threshold
    if name == "kimi":
        return get_kimi_length_reward(gate, t)
    if name == "l1_max":
        return get_l1_max_length_reward(gate, config.l1_budget, t)
    if name == "lenvm_seq":
        if critic is None and config.reward_critic_path:
            critic = _load_critic(config.reward_critic_path)
        return get_lenvm_seq_reward(gate, config.seq_beta, critic, t)
    return get_soft_overlong_reward(config.overlong_max_length, config.overlong_cache)


def get_reward_funcs(names, task: str | None = None, config: LengthRewardConfig | None = None, critic=None) -> list:
    """Reward functions by name, open-r1 style: ``get_reward_funcs(["opposites", "kimi"], task="opposites")``.

    Names: the tasks (``addition``, ``gsm8k``, ``opposites``), ``critic_length_return``, ``group_length``,
    and ``kimi``, ``l1_max``, ``lenvm_seq``, ``soft_overlong``, with their settings in ``config``
    (:class:`LengthRewardConfig`; the gated ones use ``config.reward_gate``, else ``task``'s reward, as the gate).
    ``critic``: a loaded LenVM for ``critic_length_return`` and ``lenvm_seq`` (else ``config.reward_critic_path``).
    """
    config = config or LengthRewardConfig()
    return [_build(name, config, task, critic) for name in names]


# ----------------------------------------------------------------------------------------- ShorterBetter
def get_shorter_better_reward(gate, beta: float = 0.01, threshold: float = 0.5, name: str = "shorter_better_reward"):
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
        lengths = _answer_lengths(completion_ids, kwargs)  # answer tokens, EOS not counted
        everything, offset = _gather(list(zip(map(repr, prompts), lengths, correct)))
        out = [0.0] * len(everything)
        for members in _groups([p for p, _, _ in everything]):
            right = [everything[i][1] for i in members if everything[i][2]]
            sol = min(right) if right else sum(everything[i][1] for i in members) / len(members)
            for i in members:
                out[i] = -beta * abs(everything[i][1] - sol)
        return out[offset : offset + len(prompts)]

    return _named(reward, name)
