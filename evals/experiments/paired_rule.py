"""Apply a decision rule written before the runs to a `lifebench_critics` table: a candidate family against a
baseline family, seed by seed, so the verdict is computed from the json rather than read off a table by eye.

The rule (the one the quickstart's recipes are adopted by): on **every** seed the two families share, the
candidate's natural-end margin over ``rules_only`` in ``--decide_mode`` is strictly above the baseline's of the same
seed at every target, and in ``--keep_mode`` the candidate keeps the project's LIFEBench goal
(evals/lifebench_goals.py; At Most: +30 points of natural ends at LS >= 95) at every target. Quality is printed
beside it and decides nothing.

For a change that saves time rather than promises more (fewer epochs, say), ``--non_inferior P`` asks instead that
the candidate lose at most P points of natural-end margin in ``--decide_mode``, on the family mean over the seeds at
every target (a per-seed bound would fail an equal recipe by chance with 60-70 rows a cell); ``--max_mre_rise Q``
adds that the family's mean held-out MRE rises by at most Q points. The deciding mode's per-seed rows are then
printed for information; ``--keep_mode`` still decides seed by seed.

    python -m evals.experiments.paired_rule --table evals/results/lifebench_adoption/lifebench_critics.json \
        --candidate broad_x2 --baseline broad_bf16 --output_dir evals/results/lifebench_adoption
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

NAME = "paired_rule"


@dataclass
class RuleArguments:
    table: str = field(metadata={"help": "A lifebench_critics.json (critics named <family>_s<seed>)."})
    candidate: str = field(metadata={"help": "The candidate family, e.g. broad_x2."})
    baseline: str = field(metadata={"help": "The family it is judged against, e.g. broad_bf16."})
    decide_mode: str = field(default="equal", metadata={"help": "The mode whose natural-end margin decides."})
    keep_mode: str = field(default="at_most", metadata={"help": "The mode whose goal the candidate must keep."})
    seeds: str = field(
        default="", metadata={"help": "Seeds that must all be there, e.g. 0,1,2 (default: the table's)."}
    )
    targets: str = field(
        default="", metadata={"help": "Targets that must all be there, e.g. 16,32 (default: the table's)."}
    )
    non_inferior: float | None = field(
        default=None,
        metadata={"help": "Points of natural-end margin the family mean may lose (default: beat every seed)."},
    )
    max_mre_rise: float | None = field(
        default=None, metadata={"help": "Points the family's mean held-out MRE may rise (default: not checked)."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where paired_rule.json / .md go (else printed)."})


def by_seed(rows: list[dict], family: str) -> dict[int, dict]:
    """``seed -> {(mode, target): row}`` for the critics ``<family>_s<seed>``; a repeated row is refused."""
    out: dict[int, dict] = {}
    for r in rows:
        m = re.fullmatch(rf"{re.escape(family)}_s(\d+)", r["critic"])
        if m:
            cells = out.setdefault(int(m.group(1)), {})
            if (r["mode"], r["target"]) in cells:
                raise ValueError(f"{r['critic']} has two {r['mode']} {r['target']} rows")
            cells[r["mode"], r["target"]] = r
    return out


def keeps_goal(row: dict) -> bool:
    from evals.lifebench_goals import bound_goal_met

    return bound_goal_met(row["natural_margin"], row["ls"])


def verdict(
    rows: list[dict],
    candidate: str,
    baseline: str,
    decide_mode: str = "equal",
    keep_mode: str = "at_most",
    seeds: list[int] | None = None,
    targets: list[int] | None = None,
    non_inferior: float | None = None,
    max_mre_rise: float | None = None,
):
    """One check per (seed, mode, target) and whether all hold; with ``non_inferior`` (points) the deciding mode's
    per-seed rows are information (``ok`` None) and one check per target compares the family means. Every critic
    of both families must have the same cells of both modes (``targets`` when given), and the families the same
    seeds (``seeds`` when given): a missing cell or seed would otherwise pass by omission, so it is refused."""
    cand, base = by_seed(rows, candidate), by_seed(rows, baseline)
    for fam, got in ((candidate, cand), (baseline, base)):
        if not got:
            raise ValueError(f"no critic named {fam}_s<seed> in the table")
    want_seeds = sorted(seeds) if seeds else sorted(cand)
    if sorted(cand) != want_seeds or sorted(base) != want_seeds:
        raise ValueError(
            f"seeds differ: {candidate} has {sorted(cand)}, {baseline} has {sorted(base)}, want {want_seeds}"
        )
    first = cand[want_seeds[0]]
    want_targets = sorted(targets) if targets else sorted(t for (m, t) in first if m == decide_mode)
    if not want_targets:  # no check at all would pass
        raise ValueError(f"{candidate}_s{want_seeds[0]} has no {decide_mode!r} cells: check --decide_mode")
    want = {(m, t) for m in (decide_mode, keep_mode) for t in want_targets}
    for fam, got in ((candidate, cand), (baseline, base)):
        for seed in want_seeds:
            have = {k for k in got[seed] if k[0] in (decide_mode, keep_mode)}
            if missing := sorted(want - have):
                raise ValueError(f"{fam}_s{seed} lacks the cells {missing}")
            if extra := sorted(have - want):
                raise ValueError(f"{fam}_s{seed} has cells the others lack: {extra}")
    checks = []  # every cell is there on both sides from here on
    for seed in want_seeds:
        for t in want_targets:
            c, b = cand[seed][decide_mode, t], base[seed][decide_mode, t]
            ok = c["natural_margin"] > b["natural_margin"] if non_inferior is None else None
            checks.append(
                dict(seed=seed, mode=decide_mode, target=t, candidate=c["natural_margin"], baseline=b["natural_margin"])
                | dict(ok=ok, nll_gap=[c["nll_gap_to_plain"], b["nll_gap_to_plain"]])
            )
        for t in want_targets:
            c, b = cand[seed][keep_mode, t], base[seed][keep_mode, t]
            checks.append(
                dict(seed=seed, mode=keep_mode, target=t, candidate=c["natural_margin"], baseline=b["natural_margin"])
                | dict(ok=keeps_goal(c), ls=c["ls"], nll_gap=[c["nll_gap_to_plain"], b["nll_gap_to_plain"]])
            )
    if non_inferior is not None:
        for t in want_targets:
            c, b = (fmean(f[s][decide_mode, t]["natural_margin"] for s in want_seeds) for f in (cand, base))
            checks.append(mean_check(decide_mode, t, c, b, c >= b - non_inferior / 100 - 1e-9))
    if max_mre_rise is not None:
        c, b = (
            fmean(_heldout_mre(f[s], f"{n}_s{s}") for s in want_seeds) for f, n in ((cand, candidate), (base, baseline))
        )
        checks.append(mean_check("heldout_mre", None, c, b, c <= b + max_mre_rise / 100 + 1e-9))
    return checks, all(c["ok"] for c in checks if c["ok"] is not None)


def mean_check(mode: str, target: int | None, candidate: float, baseline: float, ok: bool) -> dict:
    """A check on the family means; the bounds carry 1e-9 so that exactly P points (a float on a 1/n grid) pass."""
    return dict(seed="mean", mode=mode, target=target, candidate=candidate, baseline=baseline, ok=ok, nll_gap=[])


def _heldout_mre(cells: dict, critic: str) -> float:
    """The critic's held-out MRE (the same on each of its rows); refused when the table lacks it."""
    mres = {r.get("heldout_mre") for r in cells.values()}
    if None in mres:
        raise ValueError(f"{critic}'s rows lack heldout_mre (no quickstart metrics.json beside its model?)")
    if len(mres) != 1:
        raise ValueError(f"{critic}'s rows disagree on heldout_mre: {sorted(mres)}")
    return mres.pop()


def figure(check: dict, x: float) -> str:
    """Margins in whole points, family means to a tenth (they move in fractions of a point and the bound is decided
    on them), the held-out MRE as a level."""
    if check["mode"] == "heldout_mre":
        return f"{100 * x:.1f} %"
    return f"{100 * x:+.1f}" if check["seed"] == "mean" else f"{100 * x:+.0f}"


def markdown(checks: list[dict], met: bool, args: RuleArguments) -> str:
    def pct(x):
        return "" if x is None else f"{100 * x:+.0f}"

    if args.non_inferior is None:
        decide = "the candidate must be above the baseline on every seed"
    else:
        decide = (
            f"the candidate's mean over the seeds must be at most {args.non_inferior:g} points below the baseline's"
        )
    mre = (
        ""
        if args.max_mre_rise is None
        else f" Held-out MRE (%): the family mean may rise by {args.max_mre_rise:g} points."
    )
    lines = [
        f"### {args.candidate} against {args.baseline}: {'**met**' if met else '**not met**'}",
        "",
        f"Natural-end margin over rules_only in points; {args.decide_mode}: {decide}; {args.keep_mode}: it must keep "
        f"the goal (+30 points at LS >= 95).{mre} NLL gap to plain: candidate / baseline, not part of the rule.",
        "",
        "| seed | mode | target | candidate | baseline | holds | NLL gap % |",
        "|---:|---|---:|---:|---:|---|---|",
    ]
    for c in checks:
        gap = " / ".join(pct(g) for g in c["nll_gap"])
        holds = "-" if c["ok"] is None else "yes" if c["ok"] else "**no**"
        target = "" if c["target"] is None else c["target"]
        figures = f"{figure(c, c['candidate'])} | {figure(c, c['baseline'])}"
        lines.append(f"| {c['seed']} | {c['mode']} | {target} | {figures} | {holds} | {gap} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    (args,) = TrlParser([RuleArguments], prog=f"python -m evals.experiments.{NAME}").parse_args_and_config(argv)
    table = json.loads(Path(args.table).read_text())
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()] or None
    targets = [int(x) for x in args.targets.split(",") if x.strip()] or None
    checks, met = verdict(
        table["rows"],
        args.candidate,
        args.baseline,
        args.decide_mode,
        args.keep_mode,
        seeds,
        targets,
        args.non_inferior,
        args.max_mre_rise,
    )
    result = {"table": args.table, "candidate": args.candidate, "baseline": args.baseline, "met": met}
    result |= {"non_inferior": args.non_inferior, "max_mre_rise": args.max_mre_rise, "checks": checks}
    md = markdown(checks, met, args)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{NAME}_{args.candidate}_vs_{args.baseline}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{NAME}_{args.candidate}_vs_{args.baseline}.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
