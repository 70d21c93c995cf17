"""The figures and the markdown table of token-level LIFEBench (``fmt`` is shared by the experiments that
tabulate its cells)."""

from __future__ import annotations

from pathlib import Path

from ..ends import NATURAL_EOS_MIN_PROB
from .lifebench_arms import ARMS
from .lifebench_tasks import MODES

ARM_COLORS = {
    "plain": "tab:gray",
    "truncate": "tab:brown",
    "rules_only": "tab:blue",
    "lenvm": "tab:orange",
    "extreme": "tab:green",
}
MODE_MARKERS = {"equal": "o", "at_most": "v", "at_least": "^"}


def plot(summary: list[dict], path: Path) -> Path:
    """LS (top) and natural-end rate (bottom) against the target, one line per arm, one column per mode."""
    from ..plots import plt, save_figure

    modes = [m for m in MODES if any(c["mode"] == m for c in summary)]
    fig, axes = plt.subplots(2, len(modes), figsize=(5 * len(modes), 7.5), squeeze=False, sharex="col")
    for j, mode in enumerate(modes):
        for arm in ARMS:
            cells = sorted((c for c in summary if c["mode"] == mode and c["arm"] == arm), key=lambda c: c["target"])
            if not cells:
                continue
            targets = [c["target"] for c in cells]
            axes[0, j].plot(targets, [c["ls"] for c in cells], marker="o", label=arm, color=ARM_COLORS[arm])
            axes[1, j].plot(
                targets, [100 * c["natural_end_rate"] for c in cells], marker="o", label=arm, color=ARM_COLORS[arm]
            )
        axes[0, j].set(title=mode.replace("_", " "), ylim=(0, 105))
        axes[1, j].set(xlabel="target tokens", ylim=(-3, 103))
        for ax in axes[:, j]:
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("Length Score (100 = met)")
    axes[1, 0].set_ylabel("natural ends (% of answers)")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle("token-level LIFEBench by target")
    return save_figure(fig, path)


def plot_quality(summary: list[dict], path: Path) -> Path:
    """LS against the NLL gap to plain, one panel per arm; a point per (mode, target) cell."""
    from ..plots import plt, save_figure

    arms = [a for a in ARMS if any(c["arm"] == a for c in summary)]
    fig, axes = plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.8), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], arms):
        for c in (c for c in summary if c["arm"] == arm and c["nll_gap_to_plain"] is not None):
            ax.scatter(
                100 * c["nll_gap_to_plain"],
                c["ls"],
                marker=MODE_MARKERS[c["mode"]],
                color=ARM_COLORS[arm],
                s=36,
                alpha=0.8,
            )
            ax.annotate(
                str(c["target"]),
                (100 * c["nll_gap_to_plain"], c["ls"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axvline(0, color="gray", lw=0.8, ls="--")
        ax.set(title=arm, xlabel="NLL gap to plain (%)", ylim=(0, 105))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("Length Score")
    for mode, marker in MODE_MARKERS.items():
        axes[0, -1].scatter([], [], marker=marker, color="black", label=mode.replace("_", " "))
    axes[0, -1].legend(fontsize=8)
    fig.suptitle("length against quality (labels: target tokens; left of 0 = likelier text than plain)")
    return save_figure(fig, path)


def fmt(x, pct: bool = False, digits: int = 1, share: bool = False) -> str:
    """A figure for the markdown tables: a share as ``37 %`` (``share``), a relative gap as ``+12.5 %`` (``pct``), else
    a plain number; None (no value, e.g. no finite NLL) as ``-``. Shared by the experiments that tabulate cells."""
    if x is None:
        return "-"
    if share:
        return f"{100 * x:.0f} %"
    return f"{100 * x:+.{digits}f} %" if pct else f"{x:.{digits}f}"


def p_eos_cell(c: dict, prefix: str) -> str:
    median, p5 = c.get(f"{prefix}p_eos_median"), c.get(f"{prefix}p_eos_p5")
    return "-" if median is None else f"{median:.2f} ({p5:.3f})"


def markdown(result: dict) -> str:
    lines = [
        f"### Token-level LIFEBench ({result['tasks']} prompts: {result['categories']}; lang {result['langs']}; "
        f"targets {result['targets']}; generator {result['generator']})",
        "",
        f"natural: EOS no rule forced, where the generator gave it at least p_eos = "
        f"{result['config'].get('natural_eos_min_prob', NATURAL_EOS_MIN_PROB)} (lenvm_rl.ends)",
        "",
        "| mode | arm | target | n | LS | mean abs(LD) | natural | forced | capped | mean NLL | NLL gap | degenerate | "
        "rep-4 | repetitive | p_eos at ends: median (p5) | plain's p_eos: median (p5) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["summary"]:
        lines.append(
            f"| {c['mode']} | {c['arm']} | {c['target']} | {c['n']} | {fmt(c['ls'])} | "
            f"{fmt(c['mean_abs_ld'], share=True)} | {fmt(c['natural_end_rate'], share=True)} | "
            f"{fmt(c['forced_stop_rate'], share=True)} | {fmt(c['capped_rate'], share=True)} | "
            f"{fmt(c['mean_nll'], digits=2)} | {fmt(c['nll_gap_to_plain'], pct=True)} | "
            f"{fmt(c['degenerate_rate'], share=True)} | {fmt(c.get('mean_rep4'), digits=3)} | "
            f"{fmt(c.get('repetitive_rate'), share=True)} | {p_eos_cell(c, '')} | {p_eos_cell(c, 'plain_')} |"
        )
    lines += [
        "",
        "LS averaged over targets (the benchmark's averaging):",
        "",
        "| mode | arm | LS | mean abs(LD) |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {o['mode']} | {o['arm']} | {o['ls']:.1f} | {100 * o['abs_ld']:.0f} % |" for o in result["overall"]]
    return "\n".join(lines) + "\n"
