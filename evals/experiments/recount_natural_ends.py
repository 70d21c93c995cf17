"""Recount the natural ends of committed token-level LIFEBench answers by the generator's own probability of ending.

The evaluation used to call an end natural when EOS was in the generator's candidate set; a rule could then pick
it (Equal To at the target) or renormalise it upward (At Most), whatever the generator's probability of ending
there. This script reads the committed cells files (they hold every answer's token ids), rebuilds each prompt from
the LIFEBench data, runs one forward of the generator over prompt + answer and takes ``p_eos``, the probability of
EOS at the step where the answer ended (softmax at the run's sampling temperature, read from its json; every EOS id
of the generator). It relabels the guided arms with :func:`lenvm_rl.ends.end_label` (plain keeps its labels: no rule
chose its ends; truncate's natural rows are plain's) and writes, per cell, the old and the new natural share, the
goal verdict on the new shares, and the distribution of ``p_eos`` at the ends of plain sampling beside each arm.

Each run's prompts are checked first: the generator's NLL of a few stored answers, recomputed, must match the stored
``nll`` (else the prompt was rebuilt wrongly and the script stops).

    OMP_NUM_THREADS=1 python -m evals.experiments.recount_natural_ends \
        --data ~/data/LIFEBench/data_no_summary.jsonl --output_dir evals/results/natural_end_recount
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAME = "natural_end_recount"
RUNS = "evals/results/lifebench,evals/results/lifebench_critic_x2,evals/results/lifebench_random_critic"
GUIDED = ("rules_only", "lenvm", "extreme")


@dataclass
class RecountArguments:
    runs: str = field(default=RUNS, metadata={"help": "Comma-separated `lenvm eval lifebench` output folders."})
    data: str = field(
        default="~/data/LIFEBench/data_no_summary.jsonl", metadata={"help": "The LIFEBench .jsonl the runs used."}
    )
    generator: str | None = field(default=None, metadata={"help": "The runs' generator (default: the embedded one)."})
    use_chat_template: bool = field(default=True, metadata={"help": "The critic's prompt format in those runs."})
    output_dir: str = field(default=f"evals/results/{NAME}", metadata={"help": "Where the json and markdown go."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward."})
    check_rows: int = field(default=6, metadata={"help": "Stored NLLs recomputed per run to check the prompts."})
    threshold: float | None = field(
        default=None,
        metadata={"help": "The natural-end threshold on p_eos (default: lenvm_rl.ends.NATURAL_EOS_MIN_PROB)."},
    )
    reuse: str | None = field(
        default=None,
        metadata={"help": "An earlier output json of this script: its rows' p_eos are reused (no forward for them)."},
    )


def load_run(folder: Path) -> tuple[dict, list[dict]]:
    from lenvm_rl.evaluation.lifebench import CELLS_FILE, load_cells

    result = json.loads((folder / "lifebench.json").read_text())
    return result, list(load_cells(folder / CELLS_FILE).values())


def prompt_texts(data: str) -> dict[str, dict]:
    """uid -> task row: LIFEBench's English tasks and the everyday prompts (as the runs named them)."""
    from lenvm_rl.evaluation.lifebench import load_tasks, task_uid, user_tasks

    tasks = {task_uid(t, i): t for i, t in enumerate(load_tasks(str(Path(data).expanduser()), {"en"}))}
    tasks.update({t["id"]: t for t in user_tasks()})
    return tasks


def prompt_ids(tokenizer, task: dict, mode: str, target: int, use_chat_template: bool) -> list[int]:
    from lenvm_rl.data import encode_prompt
    from lenvm_rl.evaluation.lifebench import token_prompt

    content = token_prompt(task["task"], task["lang"], mode, target)
    return encode_prompt(tokenizer, [{"role": "user", "content": content}], use_chat_template)


def check_prompts(model, tokenizer, jobs: list[tuple], n: int) -> float:
    """Largest |recomputed - stored| NLL over ``n`` stored answers with an NLL; stops on a mismatch."""
    from lenvm_rl.evaluation.common import answer_nll

    picked = [j for j in jobs if j[2].get("nll") is not None][:n]
    if not picked:
        return 0.0
    eos = tokenizer.eos_token_id
    completions = [list(r["token_ids"]) + ([eos] if r["end"] == "natural" else []) for _, _, r in picked]
    got = answer_nll(model, [p for _, p, _ in picked], completions, pad_token_id=tokenizer.pad_token_id or eos)
    worst = max(abs(g - r["nll"]) for g, (_, _, r) in zip(got, picked))
    if worst > 1e-2:
        raise SystemExit(f"rebuilt prompts do not reproduce the stored NLL (off by {worst:.4f}): wrong data or format")
    return worst


def main(argv: list[str] | None = None) -> dict:
    from evals.lifebench_goals import GOAL_BOUND_NATURAL_MARGIN, GOAL_EQUAL_NATURAL, goal
    from lenvm_rl.args import make_parser, parse
    from lenvm_rl.ends import NATURAL_EOS_MIN_PROB, end_eos_probability, end_label, eos_token_ids, p_eos_distribution
    from lenvm_rl.evaluation import common

    (args,) = parse(make_parser([RecountArguments], "python -m evals.experiments.recount_natural_ends", __doc__), argv)
    common.setup_threads()
    model, tokenizer = common.load_generator(args.generator)
    model.float()  # the runs were scored in float32 on CPU
    eos_ids = eos_token_ids(tokenizer, model)
    tasks = prompt_texts(args.data)
    threshold = NATURAL_EOS_MIN_PROB if args.threshold is None else args.threshold
    started, report = time.time(), {"threshold": threshold, "eos_ids": eos_ids, "runs": []}
    cache, base = {}, None  # (temperature, prompt, answer) -> p_eos: runs that reused cells share answers
    known = {}  # (run, mode, arm, target, uid) -> p_eos from --reuse
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        report["p_eos_from"] = earlier.get("p_eos_from") or {
            k: earlier.get(k) for k in ("command", "machine", "seconds")
        }
        for run in earlier["runs"]:
            for r in run["rows"]:
                if r["p_eos"] is not None:
                    known[run["run"], r["mode"], r["arm"], r["target"], r["uid"]] = r["p_eos"]
    for folder in (Path(f.strip()) for f in args.runs.split(",") if f.strip()):
        result, cells = load_run(folder)
        temperature = result["config"]["temperature"]
        rows_by_cell = {(c["mode"], c["arm"], c["target"]): c["rows"] for c in cells}
        borrowed = borrow_cells(rows_by_cell, result, base)
        base = base or (result, rows_by_cell)
        jobs = []
        for (mode, arm, target), rows in rows_by_cell.items():
            if arm == "truncate":
                continue  # its natural rows are plain's, its others were cut
            for r in rows:
                if r["end"] in ("natural", "forced"):  # ended with EOS: its p_eos
                    ids = prompt_ids(tokenizer, tasks[r["uid"]], mode, target, args.use_chat_template)
                    if (str(folder), mode, arm, target, r["uid"]) in known:
                        cache[temperature, tuple(ids), tuple(r["token_ids"])] = known[
                            str(folder), mode, arm, target, r["uid"]
                        ]
                    jobs.append((mode, ids, r))
        nll_error = check_prompts(model, tokenizer, jobs, args.check_rows)
        todo = [j for j in jobs if (temperature, tuple(j[1]), tuple(j[2]["token_ids"])) not in cache]
        todo.sort(key=lambda j: len(j[1]) + len(j[2]["token_ids"]))  # similar lengths share a batch
        probs = end_eos_probability(
            model,
            [p for _, p, _ in todo],
            [r["token_ids"] for _, _, r in todo],
            eos_ids,
            temperature,
            args.batch_size,
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0],
        )
        for (_, p, r), x in zip(todo, probs):
            cache[temperature, tuple(p), tuple(r["token_ids"])] = x
        for _, p, r in jobs:
            r["p_eos"] = cache[temperature, tuple(p), tuple(r["token_ids"])]
        plain_p = {
            (m, t, r["uid"]): r.get("p_eos") for (m, a, t), rows in rows_by_cell.items() if a == "plain" for r in rows
        }
        out_cells, summaries = [], []
        for (mode, arm, target), rows in sorted(rows_by_cell.items()):
            old = sum(r["end"] == "natural" for r in rows) / len(rows)
            if arm == "truncate":
                for r in rows:
                    r["p_eos"] = plain_p.get((mode, target, r["uid"])) if r["end"] == "natural" else None
            new_ends = [
                end_label(r["end"] != "cap", r["end"] == "forced", r.get("p_eos"), threshold)
                if arm in GUIDED
                else r["end"]
                for r in rows
            ]
            new = sum(e == "natural" for e in new_ends) / len(rows)
            plain_here = [p for (m, t, _), p in plain_p.items() if (m, t) == (mode, target) and p is not None]
            out_cells.append(
                {
                    "mode": mode,
                    "arm": arm,
                    "target": target,
                    "n": len(rows),
                    "natural_old": old,
                    "natural_new": new,
                    "relabelled": sum(r["end"] == "natural" and e != "natural" for r, e in zip(rows, new_ends)),
                    "p_eos_old_natural": p_eos_distribution(r.get("p_eos") for r in rows if r["end"] == "natural"),
                    "p_eos_forced": p_eos_distribution(r.get("p_eos") for r in rows if r["end"] == "forced"),
                    "p_eos_plain": p_eos_distribution(plain_here),
                }
            )
            summaries.append(
                {"mode": mode, "arm": arm, "target": target, "ls": 0.0, "natural_end_rate": new}
                | {k: v for k, v in _stored_summary(result, mode, arm, target).items() if k != "natural_end_rate"}
            )
        verdict = goal(summaries)
        report["runs"].append(
            {
                "run": str(folder),
                "command": result["command"],
                "temperature": temperature,
                "nll_check_max_error": nll_error,
                "answers_scored": len(todo),
                "answers_with_eos": len(jobs),
                "cells_from_first_run": [f"{m} {a} {t}" for m, a, t in borrowed],
                "cells": out_cells,
                "rows": [
                    {"mode": m, "arm": a, "target": t, "uid": r["uid"], "end": r["end"], "p_eos": r.get("p_eos")}
                    for (m, a, t), rows in sorted(rows_by_cell.items())
                    for r in rows
                ],
                "goal_new": verdict,
                "goal_old": goal(result.get("summary", [])),  # the run's own labels (what it stored as "goal")
            }
        )
        print(f"[{NAME}] {folder}: {len(jobs)} answers scored ({time.time() - started:.0f} s so far)")
    # plain's ends pooled (runs that reused plain cells hold the same answers once): the threshold's reference
    plain_ends = {
        (r["mode"], r["target"], r["uid"]): r["p_eos"]
        for run in report["runs"]
        for r in run["rows"]
        if r["arm"] == "plain" and r["end"] == "natural" and r["p_eos"] is not None
    }
    values = sorted(plain_ends.values())
    report["plain_ends"] = p_eos_distribution(values) | {
        "quantiles": {f"p{q}": float(np.percentile(values, q)) for q in (1, 2, 5, 10, 25, 50)} if values else {},
        "share_below": {str(x): float(np.mean([v < x for v in values])) for x in (0.01, 0.02, 0.05, 0.1, 0.2)},
    }
    report["seconds"] = time.time() - started
    report["command"] = " ".join(
        ["python -m evals.experiments.recount_natural_ends", *(argv if argv is not None else sys.argv[1:])]
    )
    report["machine"] = common.machine()
    report["goal_constants"] = {"equal_natural": GOAL_EQUAL_NATURAL, "bound_margin": GOAL_BOUND_NATURAL_MARGIN}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(report, indent=2))
    (out / f"{NAME}.md").write_text(markdown(report))
    print(markdown(report))
    return report


def borrow_cells(rows_by_cell: dict, result: dict, base: tuple | None) -> list[tuple]:
    """The cells a run's summary lists but its cells file lacks (a run that reused another's critic-free cells), taken
    from the first run when that run's stored rates for them agree; returns their keys."""
    if base is None:
        return []
    taken = []
    for s in result.get("summary", []):
        key = (s["mode"], s["arm"], s["target"])
        if key in rows_by_cell or key not in base[1]:
            continue
        theirs = _stored_summary(base[0], *key)
        if any(abs(s[k] - theirs.get(k, math.nan)) > 1e-9 for k in ("natural_end_rate", "ls")) or s["n"] != theirs["n"]:
            raise SystemExit(f"{key} is not in this run's cells and differs from the first run's: pass its cells")
        rows_by_cell[key] = base[1][key]
        taken.append(key)
    return taken


def _stored_summary(result: dict, mode: str, arm: str, target: int) -> dict:
    return next(
        (s for s in result.get("summary", []) if (s["mode"], s["arm"], s["target"]) == (mode, arm, target)),
        {"ls": math.nan},
    )


def _share(x: float) -> str:
    return f"{100 * x:.0f} %"


def _dist(d: dict) -> str:
    if not d.get("n"):
        return "-"
    return f"{d['n']}: min {d['min']:.3f}, p5 {d['p5']:.3f}, median {d['median']:.2f}"


def markdown(report: dict) -> str:
    lines = [
        f"<!-- {report['command']} | {report['machine']} | {report['seconds']:.0f} s -->",
        *(
            [f"<!-- p_eos computed by: {report['p_eos_from']['command']} | {report['p_eos_from']['seconds']:.0f} s -->"]
            if report.get("p_eos_from")
            else []
        ),
        f"### Natural ends recounted: EOS with p_eos >= {report['threshold']} and no rule forcing it",
        "",
        "p_eos: the generator's probability of EOS where the answer ended (the run's sampling temperature). "
        "Plain keeps its labels (no rule chose its ends); its p_eos distribution is given beside each cell.",
    ]
    pe = report.get("plain_ends") or {}
    if pe.get("n"):
        qs = ", ".join(f"{k} {v:.3f}" for k, v in pe["quantiles"].items())
        below = ", ".join(f"< {k}: {100 * v:.1f} %" for k, v in pe["share_below"].items())
        lines += ["", f"Plain sampling's {pe['n']} natural ends, pooled: {qs}; share below {below}."]
    for run in report["runs"]:
        lines += [
            "",
            f"#### {run['run']} (temperature {run['temperature']}, {run['answers_scored']} answers scored, "
            f"NLL check max error {run['nll_check_max_error']:.1e})",
            "",
            "| mode | target | arm | n | natural old | natural new | relabelled | p_eos at old natural ends | "
            "p_eos at forced ends | plain's p_eos at its ends |",
            "|---|---:|---|---:|---:|---:|---:|---|---|---|",
        ]
        for c in sorted(run["cells"], key=lambda c: (c["mode"], c["target"], c["arm"])):
            lines.append(
                f"| {c['mode']} | {c['target']} | {c['arm']} | {c['n']} | {_share(c['natural_old'])} | "
                f"{_share(c['natural_new'])} | {c['relabelled']} | {_dist(c['p_eos_old_natural'])} | "
                f"{_dist(c['p_eos_forced'])} | {_dist(c['p_eos_plain'])} |"
            )
        old = {(g["mode"], g["target"]): g for g in (run["goal_old"] or {}).get("checks", [])}
        if run["goal_new"]:
            lines += [
                "",
                "| mode | target | natural lenvm (old -> new) | natural rules_only (old -> new) | goal met (old -> new) |",
                "|---|---:|---:|---:|---|",
            ]
            for g in run["goal_new"]["checks"]:
                o = old.get((g["mode"], g["target"]), {})
                lines.append(
                    f"| {g['mode']} | {g['target']} | {_share(o.get('natural_lenvm', math.nan))} -> "
                    f"{_share(g['natural_lenvm'])} | {_share(o.get('natural_rules_only', math.nan))} -> "
                    f"{_share(g['natural_rules_only'])} | {'yes' if o.get('met') else 'no'} -> "
                    f"{'yes' if g['met'] else 'no'} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
