"""`lenvm eval visualize`: the LenVM's count-down along one completion, as a PNG and a standalone HTML page.

Each completion token shows the true number of tokens still to come and the critic's prediction
``ln(1 + V) / ln(gamma)``; in the HTML page every token is tinted by its length shift (red: the token made the
continuation longer, blue: shorter) and hovering shows its numbers. The page has no external assets.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import common

NAME = "visualize"


def token_table(critic, example: dict) -> list[dict]:
    """Per completion token: text, true and predicted tokens to come after it, value, length shift."""
    from ..returns import value_to_remaining

    ids, mask, labels, prompt_len = common.right_pad([example], critic._pad_id())
    with torch.no_grad():
        values = critic.values(ids, mask)[0].double()
        shift = critic.length_shift(ids, mask, prompt_len)[0]
    remaining = value_to_remaining(values, critic.gamma)
    tok = critic.tokenizer
    rows = []
    for j in range(int(prompt_len[0]), int(mask[0].sum())):
        rows.append(
            {
                "position": j - int(prompt_len[0]),
                "token": tok.decode([int(ids[0, j])]),
                "true_remaining": int(labels[0, j]) if labels[0, j] >= 0 else 0,
                "predicted_remaining": float(remaining[j]),
                "value": float(values[j]),
                "shift": float(shift[j]),
            }
        )
    return rows


def pick(examples: list[dict], index: int | None) -> dict:
    """The requested completion, else the one at the 75th length percentile (long enough to show the count-down)."""
    if index is not None:
        if not 0 <= index < len(examples):
            raise ValueError(f"--index {index} out of range: {len(examples)} finished completions")
        return examples[index]
    order = sorted(range(len(examples)), key=lambda i: examples[i]["completion_length"])
    return examples[order[len(order) * 3 // 4]]


def token_spans(rows: list[dict]) -> str:
    """Completion tokens as HTML spans tinted by length shift (red: longer, blue: shorter, strongest = 0.6
    opacity), their numbers in the ``title`` (hover). Rows as :func:`token_table` gives them; a row without
    ``true_remaining`` (an answer still being written, as in `lenvm demo`) shows the prediction only."""
    if not rows:
        return ""
    scale = max(max(abs(r["shift"]) for r in rows), 1e-6)
    spans = []
    for r in rows:
        a = min(abs(r["shift"]) / scale, 1.0) * 0.6
        color = f"rgba(214,39,40,{a:.2f})" if r["shift"] > 0 else f"rgba(31,119,180,{a:.2f})"
        true = f"true tokens to come: {r['true_remaining']}\n" if r.get("true_remaining") is not None else ""
        tip = (
            f"token {r['position']}: {r['token']!r}\n{true}predicted tokens to come: {r['predicted_remaining']:.1f}"
            f"\nV = {r['value']:.4f}\nlength shift = {r['shift']:+.4f}"
        )
        spans.append(
            f'<span style="background:{color}" title="{html.escape(tip)}" data-i="{r["position"]}" '
            f'data-shift="{r["shift"]:+.4f}">{html.escape(r["token"])}</span>'
        )
    return "".join(spans)


def html_page(rows: list[dict], title: str, prompt: str, boundary: float) -> str:
    w, h, n = 760, 220, len(rows)
    top = max(max(r["true_remaining"] for r in rows), max(r["predicted_remaining"] for r in rows), 1)

    def xy(i, y):
        return f"{40 + (w - 50) * i / max(n - 1, 1):.1f},{h - 25 - (h - 40) * y / top:.1f}"

    true_line = " ".join(xy(i, r["true_remaining"]) for i, r in enumerate(rows))
    pred_line = " ".join(xy(i, r["predicted_remaining"]) for i, r in enumerate(rows))
    dots = "".join(
        f'<circle cx="{xy(i, r["predicted_remaining"]).split(",")[0]}" '
        f'cy="{xy(i, r["predicted_remaining"]).split(",")[1]}" r="3" fill="#ff7f0e">'
        f"<title>{html.escape(repr(r['token']))}: predicted {r['predicted_remaining']:.1f}, "
        f"true {r['true_remaining']}</title></circle>"
        for i, r in enumerate(rows)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:820px;margin:2em auto;color:#222}}
.text{{white-space:pre-wrap;line-height:1.9;font-family:monospace;border:1px solid #ddd;padding:1em}}
.text span:hover{{outline:1px solid #000}} .prompt{{color:#555;white-space:pre-wrap}}</style></head>
<body><h2>{html.escape(title)}</h2>
<p class="prompt"><b>Prompt:</b> {html.escape(prompt)}</p>
<p>Predicted length at the prompt boundary: <b>{boundary:.1f}</b> tokens; actual: <b>{len(rows)}</b>.
Hover a token for its numbers. Tint: <span style="background:rgba(214,39,40,.5)">longer</span> /
<span style="background:rgba(31,119,180,.5)">shorter</span> (length shift).</p>
<svg width="{w}" height="{h}" style="border:1px solid #ddd">
<text x="45" y="15" font-size="12">tokens still to come: <tspan fill="#000">true</tspan> /
<tspan fill="#ff7f0e">predicted</tspan></text>
<polyline points="{true_line}" fill="none" stroke="#000" stroke-width="2"/>
<polyline points="{pred_line}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>{dots}
<text x="40" y="{h - 8}" font-size="11">token 0</text><text x="{w - 70}" y="{h - 8}" font-size="11">token {n - 1}</text>
<text x="2" y="25" font-size="11">{top:.0f}</text></svg>
<div class="text">{token_spans(rows)}</div></body></html>
"""


@dataclass
class VisualizeArguments(common.EvalArguments):
    """Arguments of `lenvm eval visualize`."""

    rollouts: str | None = field(
        default=None, metadata={"help": "Completions to pick from (default: the quickstart's held-out ones)."}
    )
    index: int | None = field(
        default=None, metadata={"help": "Which finished completion (default: the one at the 75th length percentile)."}
    )


def main(argv=None) -> dict:
    a = common.parse_args(VisualizeArguments, NAME, __doc__.split("\n")[0], argv)
    common.setup_threads()

    from ..plots import plot_remaining_length

    critic = common.load_critic(a.critic)
    examples, source = common.heldout_examples(
        a.critic, a.rollouts, critic.tokenizer, 16 if a.tiny else None, critic.use_chat_template
    )
    example = pick(examples, a.index)
    rows = token_table(critic, example)
    prompt = critic.tokenizer.decode(example["input_ids"][: example["prompt_len"]], skip_special_tokens=True)
    from ..returns import value_to_remaining

    # The count-down is in steps to come, EOS included (not answer tokens, as predict_length gives them).
    v0 = critic.values(torch.tensor([example["input_ids"][: example["prompt_len"]]]))[0, -1]
    boundary = float(value_to_remaining(v0, critic.gamma))
    out = Path(a.output_dir)
    title = f"LenVM count-down over a {len(rows)}-token completion"
    # The first point is the prompt boundary s_0, then the state after each completion token.
    plot_remaining_length(
        [len(rows)] + [r["true_remaining"] for r in rows],
        [boundary] + [r["predicted_remaining"] for r in rows],
        out / f"{NAME}.png",
        title=title,
    )
    (out / f"{NAME}.html").write_text(html_page(rows, title, prompt, boundary))
    err = sum(abs(r["predicted_remaining"] - r["true_remaining"]) for r in rows) / len(rows)
    result = {
        "command": common.command_line(NAME, argv),
        "critic": a.critic,
        "rollouts": source,
        "prompt_id": example.get("prompt_id"),
        "completion_tokens": len(rows),
        "boundary_prediction": boundary,
        "mean_abs_error_tokens": err,
        "tokens": rows,
    }
    md = (
        f"### Value curve of one held-out completion\n\n{len(rows)} tokens; predicted at the prompt boundary "
        f"{boundary:.1f}; mean |predicted - true| tokens to come along the completion: {err:.1f}. "
        f"Figure `{NAME}.png`, hover page `{NAME}.html`.\n"
    )
    return common.write_outputs(out, NAME, result, md)
