"""Does a better length predictor make a better length-guided decoder? The LenVM arm of token-level LIFEBench with
several critics, each beside its own length-prediction error and the rules alone.

One critic per training seed says little: the quickstart critics' held-out MRE moves by 20 points with the seed
(evals/results/quickstart_seeds). So this runs the same LIFEBench cells (same prompts, sampling seeds, rules) with
every critic given, ``--critics name=path,...`` (names ending in ``_s<seed>`` form families, e.g. default_s0..2),
each in its own folder under ``--runs_dir``, started from the previous critic's cells (the first from
``--base_cells``), so the critic-free arms are computed once.
Per cell and critic: LS, natural ends, NLL gap to plain and degenerate rate, and the margins over ``rules_only``
(the same answers for every critic). Each critic's length-prediction error is the MRE on its own held-out split,
read from the quickstart's metrics.json beside its model (none for a critic without one, e.g. an untrained head);
the splits differ by seed, so it is a rough axis. Kendall tau across critics says whether a lower MRE goes with more
natural ends or a smaller quality cost; with a handful of critics it is a direction, not a test. Natural ends are
also tabulated per LIFEBench category, each family pooled over its critics (which kinds of prompt the signal fails on).
``--previous`` adds the critics of an earlier run of this experiment on the same cells without rerunning them (a
trained critic need not outlive the session that judged it); its rules_only cells must equal this run's, which checks
that the prompts, seeds and rules are the same.

    python -m evals.experiments.lifebench_critics --critics default_s0=lenvm_runs/seeds/default_s0/model,... \
        --data ~/data/LIFEBench/data_no_summary.jsonl --rows_per_cell 30 --batch_size 33 --targets 16,32 \
        --modes equal,at_most --arms plain,rules_only,lenvm --base_cells evals/results/lifebench/lifebench_cells.jsonl \
        --runs_dir lenvm_runs/eval/lifebench_critics --output_dir evals/results/lifebench_critics

    # later, one more critic on the same cells (the same flags, without --base_cells):
    python -m evals.experiments.lifebench_critics --critics new_s0=DIR --previous \
        evals/results/lifebench_critics/lifebench_critics.json ... --output_dir lenvm_runs/eval/lifebench_critics_joined
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAME = "lifebench_critics"
FIGURES = ("ls_margin", "natural_margin", "nll_gap_to_plain", "degenerate_rate")
CONTROLS = ("plain", "rules_only")  # the critic-free arms: the same answers for every critic


@dataclass
class CriticsArguments:
    """The experiment's own options; every other flag is `lenvm eval lifebench`'s (its --critic is not used)."""

    critics: str = field(default="", metadata={"help": "Comma-separated name=path pairs, e.g. default_s0=DIR."})
    runs_dir: str = field(
        default="lenvm_runs/eval/lifebench_critics",
        metadata={"help": "One `lenvm eval lifebench` output folder per critic (<name>/) goes here."},
    )
    previous: str = field(
        default="",
        metadata={
            "help": "An earlier lifebench_critics.json on the same cells: its critics join the tables without a "
            "rerun (its rules_only cells must equal this run's)."
        },
    )


def parse_critics(text: str, minimum: int = 2) -> dict[str, str]:
    """``name=path`` pairs in the order given; names must be distinct and usable as folder names. ``minimum``: how
    many the comparison needs (fewer when an earlier run's critics join)."""
    from lenvm_rl.evaluation.lifebench import ARMS

    pairs = [p.strip() for p in text.split(",") if p.strip()]
    critics = {}
    for p in pairs:
        name, eq, path = p.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path:
            raise ValueError(f"--critics takes name=path pairs (name: letters, digits, _ . -), got {p!r}")
        if name in critics:
            raise ValueError(f"--critics names a critic twice: {name!r}")
        if family(name) in ARMS:
            raise ValueError(f"--critics: {name!r} would be read as the {family(name)!r} arm; rename the critic")
        critics[name] = path
    if len(critics) < minimum:
        raise ValueError(f"--critics needs at least {minimum} name=path pair(s) to compare")
    return critics


def family(name: str) -> str:
    """``default_s2`` -> ``default``; a name without a seed suffix is its own family."""
    return re.sub(r"_s\d+$", "", name)


def looks_local(critic: str) -> bool:
    """A path rather than a hub id (``org/name``): it exists, or it is absolute, relative to ``.``/``~``, or
    deeper than one slash. Missing local paths are refused up front; hub ids are left to the loader."""
    if Path(critic).expanduser().exists() or critic.startswith((".", "/", "~")):
        return True
    return not re.fullmatch(r"[\w.-]+/[\w.-]+", critic)


def heldout_mre(critic: str) -> float | None:
    """The critic's held-out MRE from the quickstart's metrics.json beside its model, if there is one (none for a
    hub id: its training split is not ours to read)."""
    folder = Path(critic).expanduser()
    path = folder.parent / "metrics.json"
    if not folder.exists() or not path.is_file():
        return None
    return json.loads(path.read_text()).get("length_prediction", {}).get("LenVM", {}).get("mre")


def compare(summaries: dict[str, list[dict]], mre: dict[str, float | None]) -> tuple[list[dict], list[dict]]:
    """(one row per critic and cell with its margins over rules_only, the rules_only row per cell). The rules_only
    cells must be the same for every critic (they carry no critic): a difference is an error, not a figure."""
    rows, controls = [], {}
    for name, summary in summaries.items():
        by = {(c["mode"], c["arm"], c["target"]): c for c in summary}
        for (mode, arm, target), c in sorted(by.items()):
            if arm != "lenvm":
                continue
            ref = by[mode, "rules_only", target]
            if controls.setdefault((mode, target), ref) != ref:
                raise ValueError(f"rules_only differs between critics at {mode} {target}: not the same prompts/seeds")
            rows.append(
                dict(c, critic=name, family=family(name), heldout_mre=mre[name])
                | {"ls_margin": c["ls"] - ref["ls"], "natural_margin": c["natural_end_rate"] - ref["natural_end_rate"]}
            )
    return rows, [controls[k] for k in sorted(controls)]


# Figures that only the answers set (exact) and the likelihood, which a different thread count sums in another order.
SAME_DRAW = {f: 1e-9 for f in ("n", "ls", "mean_abs_ld", "natural_end_rate", "forced_stop_rate", "capped_rate")}
SAME_DRAW["mean_nll"] = 1e-4


def revisions() -> dict:
    """The guided (lenvm) rule's revision per mode, where it was revised (``lifebench.RULE_REVISIONS``)."""
    from lenvm_rl.evaluation.lifebench import RULE_REVISIONS

    return {mode: rev for (mode, arm), rev in RULE_REVISIONS.items() if arm == "lenvm"}


def join_previous(previous: dict, rows: list[dict], controls: list[dict], categories: list[dict]) -> tuple:
    """(rows, categories) of an earlier result of this experiment joined with this run's. The earlier rules_only
    cells must be this run's (the same draw: same answers, so the same figures); critic names must not repeat.
    Per category, plain and rules_only are shared and a family's counts add up over the two runs."""
    # rules_only can be the same under an older decoding rule (a constant critic's weight cancels), so the draw check
    # below cannot see a critic row made by a rule since revised: the table records the revisions it was made under
    made_under, now = previous.get("rule_revisions", {}), revisions()
    stale = sorted({r["mode"] for r in previous["rows"] if made_under.get(r["mode"]) != now.get(r["mode"])})
    if stale:
        raise ValueError(f"--previous has {stale} rows from an older decoding rule: rerun those critics on these cells")
    old = {(c["mode"], c["target"]): c for c in previous["rules_only"]}
    new = {(c["mode"], c["target"]): c for c in controls}
    if old.keys() != new.keys():
        raise ValueError(f"--previous has cells {sorted(old)}, this run {sorted(new)}: use the same --modes/--targets")
    for key, c in new.items():
        shared = [f for f in SAME_DRAW if c.get(f) is not None and old[key].get(f) is not None]
        if any(not np.isclose(c[f], old[key][f], rtol=SAME_DRAW[f], atol=0) for f in shared):
            raise ValueError(f"--previous: its rules_only cell {key} differs from this run's: not the same draw")
    if repeated := sorted({r["critic"] for r in rows} & {r["critic"] for r in previous["rows"]}):
        raise ValueError(f"--previous already has critic(s) {repeated}; give new names")
    pooled: dict[tuple, dict] = {}
    for e in [*previous["by_category"], *categories]:
        key = (e["mode"], e["target"], e["category"], e["arm"])
        if key not in pooled:
            pooled[key] = e
        elif e["arm"] in CONTROLS:  # the same answers in both runs
            if (e["n"], e["natural"]) != (pooled[key]["n"], pooled[key]["natural"]):
                raise ValueError(f"--previous: {e['arm']} ends differ at {key[:3]}: not the same draw")
        else:  # the same family in both runs: its rows add up
            n, natural = pooled[key]["n"] + e["n"], pooled[key]["natural"] + e["natural"]
            pooled[key] = dict(e, n=n, natural=natural, natural_end_rate=natural / n)
    return [*previous["rows"], *rows], sorted(pooled.values(), key=lambda e: (e["mode"], e["target"], e["category"]))


def by_family(rows: list[dict]) -> list[dict]:
    """Mean and sd (over a family's critics) of each figure per cell."""
    out = []
    for key in sorted({(r["mode"], r["target"], r["family"]) for r in rows}):
        members = [r for r in rows if (r["mode"], r["target"], r["family"]) == key]
        entry = {"mode": key[0], "target": key[1], "family": key[2], "n_critics": len(members)}
        for f in ("heldout_mre", *FIGURES):
            vals = [r[f] for r in members if r[f] is not None]
            entry[f] = float(np.mean(vals)) if vals else None
            entry[f"{f}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        out.append(entry)
    return out


def rank_agreement(rows: list[dict]) -> list[dict]:
    """Kendall tau across the critics with an MRE, per cell, between the MRE and each decoding figure."""
    from lenvm_rl.metrics import kendall_tau

    out = []
    for mode, target in sorted({(r["mode"], r["target"]) for r in rows}):
        cell = [r for r in rows if (r["mode"], r["target"]) == (mode, target) and r["heldout_mre"] is not None]
        if len(cell) < 3:
            continue
        mre = [r["heldout_mre"] for r in cell]
        entry = {"mode": mode, "target": target, "n_critics": len(cell)}
        for f in FIGURES:  # a figure equal for every critic (e.g. LS 100 under a maximum) has no ranking: None
            tau = kendall_tau(mre, [r[f] for r in cell])
            entry[f"tau_mre_{f}"] = float(tau) if np.isfinite(tau) else None
        out.append(entry)
    return out


def by_category(results: dict[str, dict]) -> list[dict]:
    """Natural ends per LIFEBench category and cell: plain and rules_only (the same answers for every critic: read from
    the first) and each family's lenvm answers pooled over its critics. Shows which kinds of prompt the signal fails
    on, with more rows per category than one critic gives."""
    groups: dict[tuple, list[bool]] = {}
    first = next(iter(results))
    for name, result in results.items():
        for r in result["rows"]:
            if r["arm"] == "lenvm":
                who = family(name)
            elif r["arm"] in CONTROLS and name == first:
                who = r["arm"]
            else:
                continue
            groups.setdefault((r["mode"], r["target"], str(r.get("category")), who), []).append(r["end"] == "natural")
    return [
        {
            "mode": m,
            "target": t,
            "category": c,
            "arm": who,
            "n": len(v),
            "natural": sum(v),
            "natural_end_rate": sum(v) / len(v),
        }
        for (m, t, c, who), v in sorted(groups.items(), key=lambda kv: kv[0][:3])
    ]


def points(x) -> str:
    """A margin between two shares, in percentage points."""
    return "-" if x is None else f"{100 * x:+.0f}"


def mean_sd(entry: dict, f: str) -> str:
    """A family's mean ± sd of figure ``f``: LS margins in LS points, the rest (shares) in percent / points."""
    mean, sd = entry[f], entry[f"{f}_sd"]
    if mean is None:
        return "-"
    scale, sign = (1.0, True) if f == "ls_margin" else (100.0, f in ("natural_margin", "nll_gap_to_plain"))
    text = f"{scale * mean:+.1f}" if sign else f"{scale * mean:.1f}"
    return text + ("" if sd is None else f" ± {scale * sd:.1f}")


def markdown(
    rows: list[dict], controls: list[dict], families: list[dict], taus: list[dict], categories: list[dict] = ()
) -> str:
    from evals.benchmarks.harness import markdown_table
    from lenvm_rl.evaluation.lifebench import fmt

    def quality(r: dict) -> list[str]:
        return [fmt(r["nll_gap_to_plain"], pct=True, digits=0), fmt(r["degenerate_rate"], share=True)]

    cells = []
    for c in controls:
        cells.append([c["mode"], c["target"], "*rules_only*", "-", f"{c['ls']:.1f}"])
        cells[-1] += [fmt(c["natural_end_rate"], share=True), *quality(c)]
        for r in (r for r in rows if (r["mode"], r["target"]) == (c["mode"], c["target"])):
            ls, natural = f"{r['ls']:.1f} ({r['ls_margin']:+.1f})", fmt(r["natural_end_rate"], share=True)
            cells.append(["", "", r["critic"], fmt(r["heldout_mre"], share=True), ls])
            cells[-1] += [f"{natural} ({points(r['natural_margin'])})", *quality(r)]
    columns = ["mode", "target", "critic", "held-out MRE", "LS (margin)", "natural (margin, points)", "NLL gap"]
    lines = markdown_table([*columns, "degenerate"], cells, text=(0, 2))
    columns = ["mode", "target", "family", "critics", "held-out MRE (%)", "LS margin", "natural margin (points)"]
    lines += ["", "Per family (mean ± sd over its critics):", ""] + markdown_table(
        [*columns, "NLL gap (%)", "degenerate (%)"],
        [
            [e["mode"], e["target"], e["family"], e["n_critics"], *(mean_sd(e, f) for f in ("heldout_mre", *FIGURES))]
            for e in families
        ],
        text=(0, 2),
    )
    if taus:
        lines += [
            "",
            "Kendall tau across critics between the held-out MRE and each figure (negative: lower MRE, higher figure):",
            "",
        ] + markdown_table(
            ["mode", "target", "critics", *FIGURES],
            [
                [t["mode"], t["target"], t["n_critics"]]
                + ["-" if t[f"tau_mre_{f}"] is None else f"{t[f'tau_mre_{f}']:+.2f}" for f in FIGURES]
                for t in taus
            ],
        )
    if categories:
        arms = sorted(dict.fromkeys(e["arm"] for e in categories), key=lambda a: a not in CONTROLS)
        table = []
        for key in dict.fromkeys((e["mode"], e["target"], e["category"]) for e in categories):
            got = {e["arm"]: e for e in categories if (e["mode"], e["target"], e["category"]) == key}
            table.append([*key, *(f"{got[a]['natural']}/{got[a]['n']}" if a in got else "-" for a in arms)])
        lines += [
            "",
            "Natural ends per LIFEBench category (lenvm: pooled over each family's critics; natural / rows):",
            "",
        ] + markdown_table(["mode", "target", "category", *arms], table, text=(0, 2))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path:
    """Natural-end margin (top) and NLL gap (bottom) against the critic's held-out MRE, one column per cell, a colour
    per family; critics without an MRE as dashed lines."""
    from lenvm_rl.plots import plt, save_figure

    cells = sorted({(r["mode"], r["target"]) for r in rows})
    families = sorted({r["family"] for r in rows})
    colors = dict(zip(families, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(2, len(cells), figsize=(4 * len(cells), 7), squeeze=False, sharey="row")
    for j, (mode, target) in enumerate(cells):
        for r in (r for r in rows if (r["mode"], r["target"]) == (mode, target)):
            for i, f in enumerate(("natural_margin", "nll_gap_to_plain")):
                y = 100 * (r[f] or 0.0)
                if r["heldout_mre"] is None:
                    axes[i, j].axhline(y, ls="--", color=colors[r["family"]], label=r["family"] if i == 0 else None)
                else:
                    axes[i, j].scatter(
                        100 * r["heldout_mre"], y, color=colors[r["family"]], label=r["family"] if i == 0 else None
                    )
        axes[0, j].set(title=f"{mode.replace('_', ' ')} {target}")
        axes[1, j].set(xlabel="critic's held-out MRE (%)")
        for ax in axes[:, j]:
            ax.axhline(0, color="gray", lw=0.8)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("natural ends over rules_only (points)")
    axes[1, 0].set_ylabel("NLL gap to plain (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0, -1].legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle("LenVM decoding with several critics, against each critic's length-prediction error")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    from lenvm_rl.evaluation import lifebench
    from lenvm_rl.evaluation.common import write_outputs

    prog = f"python -m evals.experiments.{NAME}"
    own, cfg = lifebench.parse_with(CriticsArguments, prog, argv, ("plain", "rules_only", "lenvm"))
    previous = json.loads(Path(own.previous).read_text()) if own.previous else None
    critics = parse_critics(own.critics, minimum=1 if previous else 2)
    missing = [p for p in critics.values() if looks_local(p) and not Path(p).expanduser().exists()]
    if missing:
        raise FileNotFoundError(f"no critic at {missing} (give a LenVM folder or a hub id such as org/name)")
    results = lifebench.run_series(cfg, {name: {"critic": path} for name, path in critics.items()}, own.runs_dir)
    summaries = {name: result["summary"] for name, result in results.items()}
    mre = {name: heldout_mre(path) for name, path in critics.items()}
    rows, controls = compare(summaries, mre)
    categories = by_category(results)
    if previous:
        rows, categories = join_previous(previous, rows, controls, categories)
        critics = previous["critics"] | critics
    families, taus = by_family(rows), rank_agreement(rows)
    out_dir = cfg.output_dir or f"lenvm_runs/eval/{NAME}"
    plot(rows, Path(out_dir) / f"{NAME}.png")
    result = {
        "command": " ".join([f"python -m evals.experiments.{NAME}", *(sys.argv[1:] if argv is None else argv)]),
        "critics": critics,
        "rows": rows,
        "rules_only": controls,
        "families": families,
        "rank_agreement": taus,
        "by_category": categories,
        "rule_revisions": revisions(),
    }
    if previous:
        result["previous_commands"] = [*previous.get("previous_commands", []), previous["command"]]
    return write_outputs(out_dir, NAME, result, markdown(rows, controls, families, taus, categories))


if __name__ == "__main__":
    main()
