"""Figures people would rather look at than read (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_remaining_length(
    true_remaining: Sequence[float],
    predicted: Sequence[float],
    path: str | Path,
    title: str = "",
    scatter: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Path:
    """Predicted vs. true remaining tokens along one completion; optionally a per-prompt scatter beside it."""
    ncols = 2 if scatter is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.2), squeeze=False)
    ax = axes[0, 0]
    steps = range(len(true_remaining))
    ax.plot(steps, true_remaining, label="true remaining tokens", color="black", lw=2)
    ax.plot(steps, predicted, label="LenVM prediction  ln(1+V)/ln(gamma)", color="tab:orange", lw=1.5)
    ax.set_xlabel("position in completion (0 = last prompt token)")
    ax.set_ylabel("tokens still to come")
    ax.set_title(title or "one held-out completion")
    ax.legend()
    ax.grid(alpha=0.3)
    if scatter is not None:
        truth, pred = scatter
        ax2 = axes[0, 1]
        ax2.scatter(truth, pred, s=18, alpha=0.75)
        hi = max(max(truth, default=1), max(pred, default=1)) * 1.05
        ax2.plot([0, hi], [0, hi], color="gray", ls="--", lw=1, label="perfect")
        ax2.set_xlabel("return-consistent sampled length L_GT")
        ax2.set_ylabel("predicted length at the prompt boundary")
        ax2.set_title("held-out prompts")
        ax2.legend()
        ax2.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
