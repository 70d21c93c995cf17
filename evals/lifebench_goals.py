"""The project's goal for token-level LIFEBench, fixed before the runs, judged on a `lenvm eval lifebench` result.

Per (mode, target), the ``lenvm`` arm against ``rules_only`` on the same prompts (the stop rules alone):

    Equal To              at least +10 LS and >= 80 % natural ends
    At Most / At Least    natural ends at least 30 points above rules_only, at LS >= 95
    quality (every mode)  LS above rules_only's, an NLL gap to plain under 10 %, under 5 % each of degenerate and
                          repetitive answers (a loop lowers the NLL, so the NLL terms alone miss it)

The verdict is read from the ``summary`` list of lifebench.json; the evaluation itself no longer writes it (the
results committed before the move carry it as ``goal``, and :func:`goal` gives the same block from their summary).

    python -m evals.lifebench_goals RUN/lifebench.json [RUN2/lifebench.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOAL_EQUAL_LS_MARGIN, GOAL_EQUAL_NATURAL = 10.0, 0.80
GOAL_BOUND_NATURAL_MARGIN, GOAL_BOUND_LS = 0.30, 95.0
GOAL_NLL_GAP, GOAL_DEGENERATE = 0.10, 0.05  # the degenerate bound also holds for repetitive answers


def bound_goal_met(natural_margin: float, ls: float) -> bool:
    """At Most / At Least: natural ends at least GOAL_BOUND_NATURAL_MARGIN above rules_only at LS >= GOAL_BOUND_LS
    (1e-9: a margin of exactly 30 points, 42/60 - 24/60, is 0.2999... in floats)."""
    return natural_margin >= GOAL_BOUND_NATURAL_MARGIN - 1e-9 and ls >= GOAL_BOUND_LS


def quality_met(ours: dict, ls_margin: float) -> bool:
    """Every mode: LS above rules_only's, and the NLL gap, degenerate and repetitive shares under their bounds (a
    missing figure is no verdict of quality)."""
    bounds = (("nll_gap_to_plain", GOAL_NLL_GAP), ("degenerate_rate", GOAL_DEGENERATE))
    bounds += (("repetitive_rate", GOAL_DEGENERATE),)
    return ls_margin > 0 and all(ours.get(k) is not None and ours[k] < bound for k, bound in bounds)


def goal(summary: list[dict]) -> dict | None:
    """The verdict per (mode, target) of a lifebench.json ``summary``, against ``rules_only`` on the same prompts;
    None without both arms in any cell. ``met`` / ``quality_met``: every cell's."""
    by = {(c["mode"], c["arm"], c["target"]): c for c in summary}
    checks = []
    for (mode, arm, target), ours in sorted(by.items()):
        ref = by.get((mode, "rules_only", target))
        if arm != "lenvm" or ref is None:
            continue
        d_ls = ours["ls"] - ref["ls"]
        d_nat = ours["natural_end_rate"] - ref["natural_end_rate"]
        if mode == "equal":
            met = d_ls >= GOAL_EQUAL_LS_MARGIN and ours["natural_end_rate"] >= GOAL_EQUAL_NATURAL
        else:
            met = bound_goal_met(d_nat, ours["ls"])
        checks.append(
            {
                "mode": mode,
                "target": target,
                "ls_lenvm": ours["ls"],
                "ls_rules_only": ref["ls"],
                "ls_margin": d_ls,
                "natural_lenvm": ours["natural_end_rate"],
                "natural_rules_only": ref["natural_end_rate"],
                "natural_margin": d_nat,
                "met": bool(met),
                "nll_gap": ours.get("nll_gap_to_plain"),
                "degenerate_rate": ours.get("degenerate_rate"),
                "repetitive_rate": ours.get("repetitive_rate"),
                "quality_met": bool(quality_met(ours, d_ls)),
            }
        )
    if not checks:
        return None
    return {
        "met": all(c["met"] for c in checks),
        "quality_met": all(c["quality_met"] for c in checks),
        "checks": checks,
    }


def markdown(verdict: dict | None) -> str:
    """The verdict as the tables lifebench.md carried before the move ("" without one)."""
    from lenvm_rl.evaluation.lifebench import fmt

    if not verdict:
        return ""
    lines = [
        f"Goal (lenvm vs rules_only; Equal To: +{GOAL_EQUAL_LS_MARGIN:.0f} LS and >= "
        f"{100 * GOAL_EQUAL_NATURAL:.0f} % natural; At Most / At Least: +{100 * GOAL_BOUND_NATURAL_MARGIN:.0f} "
        f"points natural at LS >= {GOAL_BOUND_LS:.0f}): **{'met' if verdict['met'] else 'not met'}**",
        "",
        f"Quality goal (LS above rules_only, NLL gap to plain < {100 * GOAL_NLL_GAP:.0f} %, degenerate and "
        f"repetitive < {100 * GOAL_DEGENERATE:.0f} % each): **{'met' if verdict['quality_met'] else 'not met'}**",
        "",
        "| mode | target | LS lenvm | LS rules_only | natural lenvm | natural rules_only | met | NLL gap | "
        "degenerate | repetitive | quality met |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {c['mode']} | {c['target']} | {c['ls_lenvm']:.1f} | {c['ls_rules_only']:.1f} | "
        f"{fmt(c['natural_lenvm'], share=True)} | {fmt(c['natural_rules_only'], share=True)} | "
        f"{'yes' if c['met'] else 'no'} | "
        f"{fmt(c['nll_gap'], pct=True)} | {fmt(c['degenerate_rate'], share=True)} | "
        f"{fmt(c.get('repetitive_rate'), share=True)} | {'yes' if c['quality_met'] else 'no'} |"
        for c in verdict["checks"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict | None]:
    """The verdict of each lifebench.json given, printed as markdown; returns ``path -> verdict``."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths or any(p.startswith("-") for p in paths):
        raise SystemExit(f"usage: python -m evals.lifebench_goals RUN/lifebench.json [...]\n\n{__doc__}")
    out = {}
    for path in paths:
        summary = json.loads(Path(path).read_text()).get("summary")
        if summary is None:
            raise SystemExit(f"{path} has no 'summary': pass the lifebench.json of a `lenvm eval lifebench` run")
        out[path] = goal(summary)
        print(f"### {path}\n\n{markdown(out[path]) or 'no verdict: the run lacks the lenvm or rules_only arm'}\n")
    return out


if __name__ == "__main__":
    main()
