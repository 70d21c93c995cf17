"""`lenvm eval length_tokens`: which tokens make a generation longer or shorter, by the critic's length shift.

The length shift of token x_t is ``-delta_t = V(s_{t-1}) - r - gamma V(s_t)`` (docs/method.md): positive when
choosing that token moved the expected continuation longer. Over held-out completions, each token counts how
often its shift exceeds +threshold (lengthening) or falls below -threshold (shortening). Raw counts are led by
the most frequent tokens ('.', ',' and ' the' land in both lists), so by default the chart ranks tokens seen at
least ``--min-count`` times by net count: times beyond the threshold in one direction minus times in the other
(``--rank count`` / ``share`` for the alternatives). EOS (always shortening: it ends the answer) is apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from . import common

NAME = "length_tokens"


def count_shifts(critic, examples: list[dict], threshold: float, batch_size: int = 8) -> dict:
    """Per token id: occurrences, times above +threshold, times below -threshold, summed shift."""
    total, up, down, summed = Counter(), Counter(), Counter(), defaultdict(float)
    for start in range(0, len(examples), batch_size):
        ids, mask, _, prompt_len = common.right_pad(examples[start : start + batch_size], critic._pad_id())
        shift = critic.length_shift(ids, mask, prompt_len)
        for row in range(ids.shape[0]):
            end = int(mask[row].sum())
            for j in range(int(prompt_len[row]), end):
                tok, s = int(ids[row, j]), float(shift[row, j])
                total[tok] += 1
                summed[tok] += s
                up[tok] += s > threshold
                down[tok] += s < -threshold
    return {"total": total, "up": up, "down": down, "summed": summed}


def ranking(counts: dict, key: str, tokenizer, top: int, min_count: int, skip: set[int], by: str = "net") -> list[dict]:
    """Tokens seen at least ``min_count`` times, ordered by ``by``:

    net    times beyond the threshold in this direction minus times in the other (frequent tokens such as '.'
           shift both ways and cancel; a token that reliably lengthens across many answers ranks high)
    count  times beyond the threshold in this direction
    share  those times over all its occurrences (favours tokens tied to one prompt's answers)
    """
    other = "down" if key == "up" else "up"
    ids = [t for t in counts[key] if counts["total"][t] >= min_count and t not in skip and counts[key][t] > 0]
    share = {t: counts[key][t] / counts["total"][t] for t in ids}
    net = {t: counts[key][t] - counts[other][t] for t in ids}
    order = {
        "net": lambda t: (-net[t], -share[t]),
        "count": lambda t: (-counts[key][t], -share[t]),
        "share": lambda t: (-share[t], -counts[key][t]),
    }[by]
    ids = [t for t in sorted(ids, key=order) if by != "net" or net[t] > 0]
    return [
        {
            "token": tokenizer.decode([t]),
            "id": t,
            "count": counts[key][t],
            "net": net[t],
            "occurrences": counts["total"][t],
            "share": share[t],
            "mean_shift": counts["summed"][t] / counts["total"][t],
        }
        for t in ids[:top]
    ]


def plot(result: dict, path: Path) -> Path:
    from ..plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(12, 0.32 * max(len(result["longer"]), len(result["shorter"]), 5) + 1.5))
    for ax, key, color, title in (
        (axes[0], "longer", "tab:red", f"shift > +{result['threshold']}: lengthening"),
        (axes[1], "shorter", "tab:blue", f"shift < -{result['threshold']}: shortening"),
    ):
        rows, rank = result[key], result["rank"]
        width = [100 * r["share"] if rank == "share" else r[rank] for r in rows]
        ax.barh([repr(r["token"]) for r in rows], width, color=color)
        ax.invert_yaxis()
        ax.set(
            xlabel={
                "share": "% of the token's occurrences",
                "count": "times",
                "net": "times this way minus times the other way",
            }[rank],
            title=title,
        )
        for i, r in enumerate(rows):
            ax.text(width[i], i, f" {r['count']} of {r['occurrences']}", va="center", fontsize=7)
    fig.suptitle(f"length tokens ({result['completions']} completions, {result['tokens']} tokens)")
    return save_figure(fig, path)


def markdown(result: dict) -> str:
    lines = [
        f"### Length tokens ({result['completions']} held-out completions, {result['tokens']} tokens, "
        f"threshold {result['threshold']}; ranked by {result['rank']}, tokens seen >= {result['min_count']} times)",
        "",
        "| lengthening token | times (net) | of | | shortening token | times (net) | of |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for i in range(max(len(result["longer"]), len(result["shorter"]))):
        cells = []
        for key in ("longer", "shorter"):
            r = result[key][i] if i < len(result[key]) else None
            cells.append(f"`{r['token']!r}` | {r['count']} ({r['net']:+d}) | {r['occurrences']}" if r else " | | ")
        lines.append(f"| {cells[0]} | | {cells[1]} |")
    eos = result["eos"]
    if eos["occurrences"]:
        lines += [
            "",
            f"EOS: mean shift {eos['mean_shift']:+.3f} over {eos['occurrences']} completions "
            f"({100 * eos['share_below']:.0f} % below -{result['threshold']}).",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class LengthTokensArguments(common.EvalArguments):
    """Arguments of `lenvm eval length_tokens`."""

    rollouts: str | None = field(
        default=None, metadata={"help": "Completions to read (default: the quickstart's held-out ones)."}
    )
    threshold: float = field(default=0.01, metadata={"help": "|length shift| that counts (value units)."})
    top: int = field(default=15, metadata={"help": "Tokens listed per direction."})
    min_count: int = field(default=10, metadata={"help": "Tokens seen fewer times are not ranked."})
    rank: Literal["net", "count", "share"] = field(
        default="net",
        metadata={
            "help": "Order by times beyond the threshold minus times the other way (net), by "
            "those times (count), or by their share of the token's occurrences "
            "(share)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "First N rollouts only."})


def main(argv=None) -> dict:
    a = common.parse_args(LengthTokensArguments, NAME, __doc__.split("\n")[0], argv)
    if a.tiny:
        a.limit, a.min_count = a.limit or 8, 1
    common.setup_threads()
    critic = common.load_critic(a.critic)
    tok = critic.tokenizer
    examples, source = common.heldout_examples(a.critic, a.rollouts, tok, a.limit, critic.use_chat_template)
    with torch.no_grad():
        counts = count_shifts(critic, examples, a.threshold)
    eos = tok.eos_token_id
    skip = {eos} | set(tok.all_special_ids)
    n_eos = counts["total"][eos]
    result = {
        "command": common.command_line(NAME, argv),
        "critic": a.critic,
        "rollouts": source,
        "completions": len(examples),
        "tokens": sum(counts["total"].values()),
        "threshold": a.threshold,
        "rank": a.rank,
        "min_count": a.min_count,
        "longer": ranking(counts, "up", tok, a.top, a.min_count, skip, a.rank),
        "shorter": ranking(counts, "down", tok, a.top, a.min_count, skip, a.rank),
        "eos": {
            "occurrences": n_eos,
            "mean_shift": counts["summed"][eos] / max(n_eos, 1),
            "share_below": counts["down"][eos] / max(n_eos, 1),
        },
    }
    out = Path(a.output_dir)
    plot(result, out / f"{NAME}.png")
    return common.write_outputs(out, NAME, result, markdown(result))
