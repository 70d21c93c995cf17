"""The math of the Length Value Model on plain tensors (docs/method.md). No models here.

Convention. A finished completion is ``y_1 .. y_N`` with ``y_N`` the EOS token: ``N`` steps, an answer of
``L = N - 1`` tokens (a *length* in this package counts answer tokens, EOS excluded: docs/method.md). State
``s_t`` is the prompt plus ``y_1 .. y_t``; ``s_0`` ends at the last prompt token. ``n_t = N - t`` steps (EOS
included) remain; the answer tokens still to come are ``n_t - 1``.

    reward per step      r   = -(1 - gamma)
    target               G_t = -(1 - gamma ** n_t)          in (-1, 0],  G_N = 0 at EOS
    Bellman              G_t = r + gamma * G_{t+1}
    model output         V   = -sigmoid(z)
    steps from a value   n   = ln(1 + V) / ln(gamma)        (underestimates E[n] by Jensen)
    length from a value  L   = max(n - 1, 0)                answer tokens to come, EOS excluded
    gamma rule           gamma = 0.01 ** (1 / L99)           so that 1 - gamma ** L99 = 0.99
    TD residual          delta_t = r + gamma * V(s_{t+1}) - V(s_t); length shift of y_{t+1} = -delta_t

Every other module calls these functions instead of re-deriving a target, an inversion or a residual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_gamma(gamma: float) -> float:
    """Return ``gamma`` as a float, or raise a clear error when it is not in the open interval (0, 1)."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a number in (0, 1) or 'auto', got {gamma!r}") from None
    if not (0.0 < g < 1.0) or math.isnan(g):
        raise ValueError(
            f"gamma must lie strictly between 0 and 1, got {gamma!r}. Typical values: 0.997 for answers of "
            "up to ~1.5k tokens, 0.9998 for long chain-of-thought; or pass gamma='auto' to derive it from "
            "the rollouts' 99th-percentile length."
        )
    return g


def step_reward(gamma: float) -> float:
    """The per-token reward ``r = -(1 - gamma)``."""
    return -(1.0 - check_gamma(gamma))


def remaining_to_value(remaining: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """Discounted return of ``n`` remaining tokens: ``G = -(1 - gamma ** n)`` (``n = 0`` gives 0)."""
    gamma = check_gamma(gamma)
    n = torch.as_tensor(remaining, dtype=torch.float64)
    return -(1.0 - torch.pow(torch.tensor(gamma, dtype=torch.float64), n))


def value_to_remaining(values: torch.Tensor | float, gamma: float, eps: float = 1e-12) -> torch.Tensor:
    """Invert a value to the steps left, the EOS step included: ``n = ln(1 + V) / ln(gamma)`` (for answer
    tokens, :func:`value_to_length`).

    Values are clamped to (-1, 0] first; ``V -> -1`` maps to a large but finite count.
    """
    gamma = check_gamma(gamma)
    v = torch.as_tensor(values, dtype=torch.float64).clamp(min=-1.0 + eps, max=0.0)
    return torch.log1p(v) / math.log(gamma)


def value_to_length(values: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """Answer tokens still to come from a value, EOS excluded: ``max(n - 1, 0)`` with ``n`` from
    :func:`value_to_remaining` (the steps left, the EOS step included)."""
    return (value_to_remaining(values, gamma) - 1.0).clamp(min=0.0)


def completion_targets(completion_length: int, gamma: float) -> torch.Tensor:
    """Targets for the ``N + 1`` trained positions of one finished completion of ``N = completion_length``
    generated tokens, its EOS included (an answer of ``N - 1`` tokens).

    Position 0 is the last prompt token (``n = N``), the last position is the EOS token (``n = 0``).
    """
    if completion_length < 1:
        raise ValueError("a completion must hold at least its EOS token (length >= 1)")
    remaining = torch.arange(completion_length, -1, -1)
    return remaining_to_value(remaining, gamma).to(torch.float32)


def gamma_from_lengths(lengths: Sequence[int], quantile: float = 0.99, mass: float = 0.99) -> float:
    """The gamma rule: ``gamma = (1 - mass) ** (1 / L_q)`` with ``L_q`` the ``quantile`` of the lengths.

    With the defaults, a completion at the 99th-percentile length has ``1 - gamma ** L99 = 0.99``.
    """
    if len(lengths) == 0:
        raise ValueError(
            "gamma='auto' needs completed rollouts to measure lengths, but none were given. Sample rollouts "
            "that end with EOS first (raise max_new_tokens if all are truncated), or pass a fixed gamma."
        )
    lq = float(torch.quantile(torch.tensor(lengths, dtype=torch.float64), quantile))
    lq = max(lq, 2.0)  # a one-token quantile would give gamma = 0.01, useless as a discount
    return float((1.0 - mass) ** (1.0 / lq))


def return_consistent_length(lengths: Sequence[int] | torch.Tensor, gamma: float) -> float:
    """Ground-truth length for a prompt with sampled lengths ``L_i``, consistent with value space:

    ``L_GT = ln(1 - mean_i(1 - gamma ** L_i)) / ln(gamma)`` (the inversion of the mean target).
    """
    v = remaining_to_value(torch.as_tensor(lengths), gamma).mean()
    return float(value_to_remaining(v, gamma))


def td_residuals(values: torch.Tensor, gamma: float, next_values: torch.Tensor | None = None) -> torch.Tensor:
    """One-step residuals ``delta_t = r + gamma * V(s_{t+1}) - V(s_t)`` along the last dimension.

    ``values`` is (..., T). ``next_values`` defaults to ``values`` shifted left, with 0 (a terminal
    state) after the last position; pass it to bootstrap or mask otherwise. The length shift of token
    ``y_{t+1}`` is ``-delta_t``.
    """
    r = step_reward(gamma)
    if next_values is None:
        next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    return r + gamma * next_values - values


def discounted_cumsum(x: torch.Tensor, discount: float) -> torch.Tensor:
    """``y_t = x_t + discount * y_{t+1}`` along the last dimension (a reverse scan)."""
    out = torch.empty_like(x)
    running = torch.zeros_like(x[..., 0])
    for t in range(x.shape[-1] - 1, -1, -1):
        running = x[..., t] + discount * running
        out[..., t] = running
    return out


def gae(deltas: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation over residuals: ``A_t = sum_k (gamma * lam) ** k * delta_{t+k}``.

    With ``lam = 1`` and residuals ending in a terminal state this telescopes to ``G_t - V(s_t)``.
    Positions past the end of a row must hold zero residuals.
    """
    check_gamma(gamma)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"GAE lambda must lie in [0, 1], got {lam}")
    return discounted_cumsum(deltas, gamma * lam)


def length_residuals(
    values: torch.Tensor, completion_mask: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Per-token TD residuals of the length return for right-padded completions, (B, T).

    ``values`` is (B, T + 1): ``V(s_0)`` at the last prompt token, then ``V(s_j)`` after completion token j.
    Residual j belongs to token ``y_{j+1}`` (the move ``s_j -> s_{j+1}``): ``r + gamma * V(s_{j+1}) - V(s_j)``,
    where the state after a terminated row's EOS is terminal (``V = 0``) and a truncated row bootstraps with
    the critic's value of its last state. Padding holds 0.
    """
    mask = completion_mask.to(values.dtype)
    lengths = completion_mask.long().sum(-1)
    next_values = values[:, 1:] * mask
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(values.shape[0], device=values.device)
    ends = terminated.bool() & (lengths > 0)
    next_values[rows[ends], last[ends]] = 0.0  # after EOS: terminal
    return td_residuals(values[:, :-1], gamma, next_values=next_values) * mask


def length_credit(
    values: torch.Tensor, completion_mask: torch.Tensor, terminated: torch.Tensor, gamma: float, lam: float = 1.0
) -> torch.Tensor:
    """Per-token length credit ``a_j = GAE_lambda(delta)_j`` of the length residuals from the critic's values,
    (B, T); lambda = 1 gives ``G_j - V(s_j)`` on terminated rows. (``LengthCritic.length_advantages`` computes
    the values and calls this.)"""
    return gae(length_residuals(values, completion_mask, terminated, gamma), gamma, lam)


def correct_group_means(
    row_credit: torch.Tensor, row_lengths: torch.Tensor, correct: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row group statistics of the ``relative`` length term over a whole batch of prompt groups, (N,) each.

    Rows come in consecutive groups of ``group_size`` completions of one prompt. For group g with correct set
    ``C_g``: ``mu_g = sum_{i in C_g} row_credit_i / sum_{i in C_g} row_lengths_i`` (the mean credit per token of
    its correct answers), and the gate ``1[c_i] * 1[|C_g| >= 2]`` (a lone correct answer has nothing to be
    compared with). Returns ``(mu, gate)`` repeated to rows.
    """
    n = row_credit.shape[0]
    if group_size < 2 or n % group_size:
        raise ValueError(f"{n} rows do not split into prompt groups of {group_size} (need at least 2 per group)")
    c = correct.to(row_credit.dtype).view(-1, group_size)
    total = (row_credit.view(-1, group_size) * c).sum(1)
    tokens = (row_lengths.to(row_credit.dtype).view(-1, group_size) * c).sum(1)
    mu = (total / tokens.clamp(min=1)).repeat_interleave(group_size)
    enough = (c.sum(1) >= 2).repeat_interleave(group_size)
    return mu, correct.bool() & enough


def relative_length_term(
    credit: torch.Tensor,
    completion_mask: torch.Tensor,
    mu: torch.Tensor,
    gate: torch.Tensor,
    alpha: float = 1.0,
    clip: float = 0.5,
) -> torch.Tensor:
    """``l_ij = gate_i * clip(alpha * (a_ij - mu_i), -clip, clip)`` on completion tokens, (B, T).

    ``credit`` holds ``a = GAE_lambda(delta)`` of the length residuals; ``mu`` and ``gate`` come from
    :func:`correct_group_means` (rows of this process). Before clipping, the term sums to zero over the correct
    rows of every gated group, so it moves probability between tokens of correct answers and never pays for
    being wrong or for answering at all.
    """
    term = (alpha * (credit - mu[:, None])).clamp(-clip, clip)
    return term * gate[:, None].to(term.dtype) * completion_mask.to(term.dtype)
