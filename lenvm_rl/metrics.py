"""Length-prediction metrics at the prompt boundary (docs/method.md), on plain lists of lengths.

Ground truth per prompt is return-consistent: ``L_GT = ln(1 - mean_i(1 - gamma ** L_i)) / ln(gamma)``,
the length whose value equals the mean sampled value, so a perfect critic scores 0 error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .returns import return_consistent_length


def per_prompt_truth(lengths_by_prompt: Mapping[str, Sequence[int]], gamma: float) -> dict[str, float]:
    return {pid: return_consistent_length(lengths, gamma) for pid, lengths in lengths_by_prompt.items()}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (ties count for neither side)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), k=1)
    dx, dy = dx[iu], dy[iu]
    denom = np.sqrt((dx != 0).sum() * (dy != 0).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def prediction_errors(predicted: Mapping[str, float], truth: Mapping[str, float]) -> dict[str, float]:
    """MRE, MAE (tokens), Kendall tau, share within 50 / 100 tokens, over the prompts in ``truth``; MRE and MAE
    also over the longest quartile (prompts whose true length is at or above the 75th percentile): the answers a
    critic trained without its cut, long completions under-predicts."""
    ids = sorted(truth)
    p = np.array([predicted[i] for i in ids], dtype=float)
    t = np.array([truth[i] for i in ids], dtype=float)
    err = np.abs(p - t)
    long = t >= np.percentile(t, 75)
    return {
        "mre": float((err / np.maximum(t, 1.0)).mean()),
        "mae": float(err.mean()),
        "mre_longest_quartile": float((err[long] / np.maximum(t[long], 1.0)).mean()),
        "mae_longest_quartile": float(err[long].mean()),
        "kendall_tau": kendall_tau(p, t),
        "within_50": float((err <= 50).mean()),
        "within_100": float((err <= 100).mean()),
        "prompts": len(ids),
    }


def train_mean_baselines(train_lengths: Sequence[int], gamma: float) -> dict[str, float]:
    """Constant predictors from the training lengths: arithmetic mean and return-consistent mean."""
    return {
        "train mean length": float(np.mean(train_lengths)),
        "train mean (return-consistent)": return_consistent_length(train_lengths, gamma),
    }
