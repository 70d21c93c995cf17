"""The project's goal for `lenvm eval tradeoff`, fixed before the runs, judged on its tradeoff.json.

At the shortest shortening tilt point (beta > 0): at least 3x the hard budget's accuracy at the same mean tokens,
and more accurate than budget forcing and than the prompted budget there.

    met           the point estimates, as the goal is written
    met_with_ci   the 95 % paired-bootstrap intervals over prompts (lenvm_rl.evaluation.tradeoff.margins): the
                  ratio to the hard budget at or above 3, the margins over forcing and prompting above 0, each
                  comparison at the same tokens or against a curve's shortest point the tilt point dominates
                  (``ci_checks``: the baselines it read; a run may leave an arm out). The EOS-bonus control, when
                  there, is reported as ``above_eos_bonus_ci`` and decides neither.

The verdict is read from the curves and tilt points stored in tradeoff.json; the evaluation itself no longer writes
it (the results committed before the move carry it as ``goal``, and :func:`result_goal` gives the same block).

    python -m evals.tradeoff_goals RUN/tradeoff.json [RUN2/tradeoff.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lenvm_rl.evaluation.tradeoff import compare, interval95, margins

GOAL_BUDGET_RATIO = 3.0  # times the hard budget's accuracy at the same mean tokens
CURVES = ("budget", "forcing", "prompted", "eos_bonus")  # the arms a tilt point is compared with


def goal(tilt: list[dict], curves: dict[str, list[dict]] | None = None, samples: int = 1) -> dict:
    """The verdict at the shortest tilt point with beta > 0 (``{}`` without one), its points already
    :func:`~lenvm_rl.evaluation.tradeoff.compare`-d with ``curves``; the intervals need ``curves`` and answers stored
    per answer (``samples`` per prompt)."""
    shortening = [q for q in tilt if q["beta"] > 0]
    if not shortening:
        return {}
    q = min(shortening, key=lambda p: p["mean_tokens"])
    out = {"beta": q["beta"], "mean_tokens": q["mean_tokens"], "accuracy": q["accuracy"]}
    out["vs_budget_ratio"] = q["accuracy"] / max(q["budget_accuracy_at_same_tokens"], 1e-9)
    checks = [out["vs_budget_ratio"] >= GOAL_BUDGET_RATIO]
    for name in ("forcing", "prompted"):
        if f"{name}_accuracy_at_same_tokens" in q:
            out[f"above_{name}"] = q["accuracy"] > q[f"{name}_accuracy_at_same_tokens"]
            checks.append(out[f"above_{name}"])
    out["met"] = all(checks)
    if not curves or "per_answer" not in q:
        return out
    found, draws = margins(q, curves, samples)
    out |= found
    ci_checks = {}
    for name in curves:
        if name not in draws:
            continue
        lo = out[f"margin_vs_{name}_ci95"][0]
        if name == "eos_bonus":  # the control: reported beside the goal, which is written without it
            out["above_eos_bonus_ci"] = bool(lo > 0 and out[f"{name}_comparison"] != "outside its range")
        elif name == "budget":
            out["vs_budget_ratio_ci95"] = interval95(draws["budget_ratio"])
            ci_checks[name] = bool(out["vs_budget_ratio_ci95"][0] >= GOAL_BUDGET_RATIO)
        else:
            ci_checks[name] = bool(lo > 0 and out[f"{name}_comparison"] != "outside its range")
    out["ci_checks"] = ci_checks  # which baselines the interval verdict read (a run may leave an arm out)
    out["met_with_ci"] = "budget" in ci_checks and all(ci_checks.values())
    return out


def result_goal(result: dict) -> dict:
    """The verdict of a tradeoff.json (its tilt points compared with its curves where a run stored no comparison)."""
    curves = {name: result.get(name) or [] for name in CURVES}
    tilt = [dict(q) for q in result["tilt"]]
    for q in tilt:
        if "budget_accuracy_at_same_tokens" not in q:
            compare(q, curves)
    return goal(tilt, curves, result.get("samples", 1))


def markdown(verdict: dict) -> str:
    """The verdict as the paragraph tradeoff.md carried before the move ("" without one)."""
    if not verdict:
        return ""
    g = verdict
    lines = [
        f"Goal at the shortest tilt point (beta {g['beta']:g}, {g['mean_tokens']:.1f} tokens): "
        f"{g['vs_budget_ratio']:.2f}x the hard budget's accuracy (goal >= {GOAL_BUDGET_RATIO:g}x), above forcing: "
        f"{g.get('above_forcing', '-')}, above prompting: {g.get('above_prompted', '-')} -> "
        f"**{'met' if g['met'] else 'not met'}** (point estimates).",
    ]
    if "met_with_ci" in g:
        lines += ["", "Paired bootstrap over prompts (95 % intervals):", ""]
        if "vs_budget_ratio_ci95" in g:
            lo, hi = g["vs_budget_ratio_ci95"]
            lines.append(f"- hard budget: ratio {g['vs_budget_ratio']:.2f}x [{lo:.2f}, {hi:.2f}]")
        for name in ("forcing", "prompted", "eos_bonus"):
            if f"margin_vs_{name}" in g:
                lo, hi = g[f"margin_vs_{name}_ci95"]
                lines.append(
                    f"- {name}: {100 * g[f'margin_vs_{name}']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                    f"({g[f'{name}_comparison']})"
                )
        lines += ["", f"With the intervals: **{'met' if g['met_with_ci'] else 'not met'}**."]
        if "above_eos_bonus_ci" in g:
            lines.append(f"Above the EOS-bonus control (decides nothing above): {g['above_eos_bonus_ci']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """The verdict of each tradeoff.json given, printed as markdown; returns ``path -> verdict``."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths or any(p.startswith("-") for p in paths):
        raise SystemExit(f"usage: python -m evals.tradeoff_goals RUN/tradeoff.json [...]\n\n{__doc__}")
    out = {}
    for path in paths:
        result = json.loads(Path(path).read_text())
        if "tilt" not in result or "budget" not in result:
            raise SystemExit(
                f"{path} has no 'tilt' and 'budget' points: pass the tradeoff.json of a `lenvm eval tradeoff` run"
            )
        out[path] = result_goal(result)
        print(f"### {path}\n\n{markdown(out[path]) or 'no verdict: the run has no tilt point with beta > 0'}\n")
    return out


if __name__ == "__main__":
    main()
