"""Length against likelihood: the LenVM arm of token-level LIFEBench at several value tolerances, beside the rules
alone at each.

The value tolerance rho (``value_tolerance``, lenvm_rl.decoding) sets how much length the value-picking steps trade
for the generator's probability: a candidate predicted rho x (tokens left) too long weighs 1/e of an exact fit. At
the default 0.1 the LenVM arm ends answers naturally more often than the rules alone, but its answers are much less
likely to the generator (evals/results/README.md). This run traces the whole curve, one `lenvm eval lifebench` per
rho on the same prompts and seeds: natural ends and Length Score against the NLL gap to plain sampling.

The control is ``rules_only`` at every rho (a constant critic: every candidate has the same value gap, so the
weight cancels and its answers should not move with rho; the table says whether they do). Each rho runs in its own
folder under ``--runs_dir``, started from the previous rho's cells (the first from ``--base_cells``, another run's
cells file) so that plain answers, and any cell with the same settings, are generated once. Not a tuning run: the default rho stays 0.1 whatever this shows.

    python -m evals.experiments.lifebench_tolerance --critic lenvm_runs/seeds/broad_s0/model \
        --data ~/data/LIFEBench/data_no_summary.jsonl --rows_per_cell 30 --batch_size 33 --targets 16,32 \
        --modes equal,at_most --arms plain,rules_only,lenvm --tolerances 0.1,0.3,1,3 \
        --base_cells evals/results/lifebench_broad_critic/lifebench_cells.jsonl \
        --output_dir evals/results/lifebench_tolerance
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

NAME = "lifebench_tolerance"
KEYS = ("ls", "natural_end_rate", "forced_stop_rate", "capped_rate", "nll_gap_to_plain", "degenerate_rate")


@dataclass
class ToleranceArguments:
    """The sweep's own options; every other flag is `lenvm eval lifebench`'s."""

    tolerances: str = field(default="0.1,0.3,1,3", metadata={"help": "Value tolerances (rho), comma-separated."})
    runs_dir: str = field(
        default="lenvm_runs/eval/lifebench_tolerance",
        metadata={"help": "One `lenvm eval lifebench` output folder per rho (rho_<x>/) goes here."},
    )


def parse_tolerances(text: str) -> list[float]:
    """Distinct finite rho >= 0, in the order given."""
    try:
        rhos = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--tolerances must be comma-separated numbers, got {text!r}") from None
    if not rhos or any(not math.isfinite(r) or r < 0 for r in rhos) or len(set(rhos)) != len(rhos):
        raise ValueError(f"--tolerances must be distinct numbers >= 0, got {text!r}")
    return rhos


def rules_only_moves(rows: list[dict]) -> list[tuple[str, int]]:
    """(mode, target) cells whose rules_only summary differs between tolerances; none expected for rho > 0."""
    by_cell: dict[tuple, set] = {}
    for r in rows:
        if r["arm"] == "rules_only" and r["value_tolerance"] > 0:
            by_cell.setdefault((r["mode"], r["target"]), set()).add(tuple(round(r[k] or 0.0, 9) for k in KEYS))
    return sorted(cell for cell, seen in by_cell.items() if len(seen) > 1)


def table(rows: list[dict]) -> list[str]:
    from lenvm_rl.evaluation.lifebench import fmt

    lines = [
        "| mode | target | arm | rho | LS | natural | forced | capped | NLL gap to plain | degenerate |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["mode"], r["target"], r["arm"] != "rules_only", r["value_tolerance"])):
        shares = [fmt(r[k], share=True) for k in ("natural_end_rate", "forced_stop_rate", "capped_rate")]
        lines.append(
            f"| {r['mode']} | {r['target']} | {r['arm']} | {r['value_tolerance']:g} | {r['ls']:.1f} | "
            f"{' | '.join(shares)} | {fmt(r['nll_gap_to_plain'], pct=True)} | {fmt(r['degenerate_rate'], share=True)} |"
        )
    return lines


def plot(rows: list[dict], path: Path) -> Path:
    """Per mode: LS (top) and natural ends (bottom) against the NLL gap to plain; a line per target through the
    tolerances (labelled), the rules-only cells as squares of the same colour."""
    from lenvm_rl.plots import plt, save_figure

    modes = sorted({r["mode"] for r in rows})
    targets = sorted({r["target"] for r in rows})
    fig, axes = plt.subplots(2, len(modes), figsize=(5.5 * len(modes), 7.5), squeeze=False, sharex="col")
    shades = plt.get_cmap("viridis")(list(range(0, 256, max(1, 256 // max(1, len(targets))))))
    for j, mode in enumerate(modes):
        for k, target in enumerate(targets):
            for arm, marker, style in (("lenvm", "o", "-"), ("rules_only", "s", "none")):
                cells = sorted(
                    (r for r in rows if (r["mode"], r["target"], r["arm"]) == (mode, target, arm)),
                    key=lambda r: r["value_tolerance"],
                )
                cells = [r for r in cells if r["nll_gap_to_plain"] is not None]
                if not cells:
                    continue
                x = [100 * r["nll_gap_to_plain"] for r in cells]
                label = f"{arm}, target {target}"
                color = shades[k]  # one colour per target; the marker tells the arm
                for i, key in enumerate(("ls", "natural_end_rate")):
                    y = [r[key] if key == "ls" else 100 * r[key] for r in cells]
                    axes[i, j].plot(x, y, marker=marker, ls=style, color=color, label=label if i == 0 else None)
                    if arm == "lenvm":
                        for r, xi, yi in zip(cells, x, y):
                            axes[i, j].annotate(
                                f"{r['value_tolerance']:g}",
                                (xi, yi),
                                fontsize=7,
                                xytext=(3, 3),
                                textcoords="offset points",
                            )
        axes[0, j].set(title=mode.replace("_", " "), ylim=(0, 105))
        axes[1, j].set(xlabel="NLL gap to plain (%)", ylim=(-3, 103))
        for ax in axes[:, j]:
            ax.axvline(0, color="gray", lw=0.8, ls="--")
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("Length Score")
    axes[1, 0].set_ylabel("natural ends (% of answers)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("LenVM decoding: length against likelihood by value tolerance (labels: rho)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    from lenvm_rl.evaluation import lifebench
    from lenvm_rl.evaluation.common import write_outputs

    prog = f"python -m evals.experiments.{NAME}"
    sweep, cfg = lifebench.parse_with(ToleranceArguments, prog, argv, ("plain", "rules_only", "lenvm"))
    rhos = parse_tolerances(sweep.tolerances)
    out_dir = cfg.output_dir or f"lenvm_runs/eval/{NAME}"
    results = lifebench.run_series(cfg, {f"rho_{rho:g}": {"value_tolerance": rho} for rho in rhos}, sweep.runs_dir)
    runs = {f"{rho:g}": result["config"]["output_dir"] for rho, result in zip(rhos, results.values())}
    rows = [
        dict(c, value_tolerance=rho)
        for rho, result in zip(rhos, results.values())
        for c in result["summary"]
        if c["arm"] in ("lenvm", "rules_only")
    ]
    moved = rules_only_moves(rows)
    lines = table(rows) + [
        "",
        f"rules_only the same at every rho > 0: {'yes' if not moved else f'no, it moved in {moved}'}",
    ]
    result = {
        "command": " ".join([f"python -m evals.experiments.{NAME}", *(sys.argv[1:] if argv is None else argv)]),
        "critic": cfg.critic,
        "tolerances": rhos,
        "runs": runs,
        "rules_only_moved": moved,
        "summary": rows,
    }
    plot(rows, Path(out_dir) / f"{NAME}.png")
    return write_outputs(out_dir, NAME, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
