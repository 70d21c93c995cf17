"""Length-prediction metrics at the prompt boundary (docs/method.md), on plain lists of lengths.

Ground truth per prompt is return-consistent: ``L_GT = ln(1 - mean_i(1 - gamma ** L_i)) / ln(gamma)``,
the length whose value equals the mean sampled value, so a perfect critic scores 0 error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .returns import return_consistent_length


def answer_tokens(record: Mapping) -> int:
    """A rollout's length in answer tokens, EOS excluded (docs/method.md): the ``num_tokens`` of a finished one
    counts the EOS it ends with."""
    return int(record["num_tokens"]) - (record["finish_reason"] == "stop")


def finished_lengths_by_prompt(records: Sequence[Mapping], min_samples: int = 2) -> dict[str, list[int]]:
    """Answer lengths (:func:`answer_tokens`) of the finished (``finish_reason == "stop"``) completions in rollout ``records``, per prompt
    id, for the prompts with at least ``min_samples`` of them (``L_GT`` needs a few): cut completions are only
    lower bounds on a length, so they never enter a ground truth."""
    lengths: dict[str, list[int]] = {}
    for r in records:
        if r["finish_reason"] == "stop":
            lengths.setdefault(r["prompt_id"], []).append(answer_tokens(r))
    return {pid: ls for pid, ls in lengths.items() if len(ls) >= min_samples}


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


def truth_noise_floor(lengths_by_prompt: Mapping[str, Sequence[int]], truth: Mapping[str, float]) -> float:
    """The MRE a perfect predictor (one that knew each prompt's expected length) would still score against a
    truth averaged from a few samples: the mean over prompts of ``E|mean_n - mu| / truth``, estimated as
    ``sqrt(2 / pi) * (s / c4(n)) / sqrt(n) / truth`` (s = the prompt's sample standard deviation, made unbiased
    by c4; normal approximation). A critic's MRE near this figure is limited by the ground truth, not by the
    critic."""
    terms = []
    for pid, t in truth.items():
        lengths = np.asarray(lengths_by_prompt[pid], dtype=float)
        if len(lengths) < 2:
            raise ValueError(f"prompt {pid!r} has {len(lengths)} sampled length(s); the noise floor needs >= 2")
        n = len(lengths)
        c4 = math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))
        terms.append(math.sqrt(2 / math.pi) * lengths.std(ddof=1) / c4 / math.sqrt(n) / max(t, 1.0))
    return float(np.mean(terms))


def train_mean_baselines(train_lengths: Sequence[int], gamma: float) -> dict[str, float]:
    """Constant predictors from the training lengths: arithmetic mean and return-consistent mean."""
    return {
        "train mean length": float(np.mean(train_lengths)),
        "train mean (return-consistent)": return_consistent_length(train_lengths, gamma),
    }
