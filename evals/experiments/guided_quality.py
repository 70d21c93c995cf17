"""Length-guided answers that read well and end on their own: plain, the budget in the prompt, the rules, LenVM and
prompt + LenVM, each guided arm with and without the per-step trust region (issue 32, item 4).

Goal (from the issue, written down before any run): on token-level LIFEBench (Equal To and At Most; targets 16, 32,
64, 128; at least 30 rows a cell; a fresh draw that no earlier choice used) **prompt + LenVM scores at least +10 LS
over prompt only, with an NLL gap to plain under 10 % and under 5 % degenerate answers, and ends naturally more
often than both single arms** (prompt only, LenVM only). The criterion, with how each term is read, is pre-registered
in evals/results/guided_quality/README.md; this script computes it (``goal`` in the JSON). Twenty everyday
instruction prompts written for the project (evals/experiments/everyday_prompts.jsonl) are reported beside it.

Arms (the same candidate settings everywhere: the critic's rollouts' temperature / top_p; lenvm_rl.candidates):

    plain          the generator alone, on the prompt without any budget (the reference of the NLL gap)
    prompt_only    the same sampling, the budget in the prompt (lenvm_rl.length_prompt's template for the mode)
    rules_only     the stop rules with a constant critic (no length information), no budget in the prompt
    lenvm          the rules with the trained critic, no budget in the prompt
    prompt_lenvm   the rules with the trained critic and the budget in the prompt

The three guided arms run twice: with the trust region off (``tr_off``) and on (``tr_on``, epsilon chosen in stage 1);
plain and prompt_only have no rule to hold back. The guided arms add the min-p floor (0.05) to the candidates;
plain sampling is the generator's own (temperature / top_p only).

Stage 1 (validation: epsilon). On prompts that are neither LIFEBench nor the everyday ones (the quickstart's held-out
prompts beside the critic, or ``--validation_prompts``), prompt_lenvm runs at every ``--epsilons`` value, Equal To
and At Most, beside plain and prompt_only. Chosen, as pre-registered: the epsilon with the highest mean LS among
those whose every cell has an NLL gap under 10 % and under 5 % degenerate answers; if none qualifies, the one with
the smallest mean NLL gap. ``--epsilon X`` skips the stage.

Stage 2 (test): LIFEBench and the everyday prompts, every arm. LIFEBench tasks state the length themselves ("Your
answer must be {word_count_type} {word_count} words long."); that sentence is removed, so the budget reaches only
the prompt arms, in the same words on both prompt sets. The draw leaves out every LIFEBench task named by an earlier
run under evals/results (``uid`` fields: the adoption test's task files, the first and third draws' results) and by
``--exclude``; when too few English tasks remain it says so and stops (``--allow_draws`` readmits named files).

Metrics per cell, from the LIFEBench evaluation's own code (lenvm_rl.evaluation.lifebench: ``answer_row``,
``cell_summary``): LS, natural ends (lenvm_rl.ends: no rule forced EOS and the generator gave it at least 0.05), NLL
gap to plain (each answer's NLL under the prompt its arm saw), degenerate and repetitive rates (above plain's 95th
percentile of NLL / rep-4). Every finished cell is appended to guided_quality_cells.jsonl and the JSON summary is
rewritten, so an interrupted run resumes where it stopped; ``--workers 2`` generates cells in two single-thread
processes. guided_quality.md prints ten answers per arm.

    python -m evals.experiments.guided_quality --critic lenvm_runs/quickstart/model \\
        --data ~/data/LIFEBench/data_no_summary.jsonl --output_dir evals/results/guided_quality
    python -m evals.experiments.guided_quality --tiny ...   # seconds: CI-sized settings on any critic
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from evals.experiments.rl_length_shaping import claim

NAME = "guided_quality"
HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
EVERYDAY = HERE / "everyday_prompts.jsonl"
MODES = ("equal", "at_most")
ARMS = ("plain", "prompt_only", "rules_only", "lenvm", "prompt_lenvm")
GUIDED = ("rules_only", "lenvm", "prompt_lenvm")  # with and without the trust region
PROMPTED = ("prompt_only", "prompt_lenvm")
GOAL_LS_MARGIN, GOAL_NLL_GAP, GOAL_DEGENERATE = 10.0, 0.10, 0.05
# LIFEBench's own length sentence, e.g. " Your answer must be {word_count_type} {word_count} words long."
LENGTH_SENTENCE = re.compile(r"\s*[A-Z][^.,\n\]]*\{word_count_type\} \{word_count\} words long\.")
UID = re.compile(r'"uid":\s*"((?:en|cn):\d+)"')


# ---------------------------------------------------------------------------------------------- prompts
def without_length_sentence(task: str) -> str:
    """A LIFEBench English task with its length requirement removed (an emptied "[Requirement]" too)."""
    text = LENGTH_SENTENCE.sub("", task)
    if "{word_count" in text:
        raise ValueError(f"a LIFEBench task whose length sentence this script cannot remove: {task[-160:]!r}")
    text = re.sub(r"\s*\[Requirement\]\s*$", "", text.rstrip())
    return re.sub(r",$", ".", text.rstrip())


def used_task_uids(root: Path, extra: list[str], allowed: list[str]) -> dict[str, set[str]]:
    """LIFEBench task uids named by earlier runs: every ``"uid": "en:N"`` in the JSON / JSONL files under ``root``
    and in ``extra``, by file. The tasks a file in ``allowed`` names are readmitted wherever they are named (a
    draw's tasks recur in every later run made on them)."""
    files = [p for p in sorted(root.rglob("*")) if p.suffix in (".json", ".jsonl") and p.is_file()]
    files += [Path(f) for f in extra]
    readmitted = set()
    for f in map(Path, allowed):
        if not f.is_file():
            raise FileNotFoundError(f"--allow_draws {f} not found")
        readmitted |= set(UID.findall(f.read_text(errors="ignore")))
    found = {}
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"--exclude {p} not found")
        if RESULTS / NAME in p.resolve().parents:  # this experiment's own results
            continue
        uids = set(UID.findall(p.read_text(errors="ignore"))) - readmitted
        if uids:
            found[str(p)] = uids
    return found


def lifebench_draw(a) -> list[dict]:
    """The fresh draw: English LIFEBench tasks no earlier run named, ``--rows_per_cell`` of them, stratified."""
    from lenvm_rl.evaluation import lifebench

    bench = lifebench.load_tasks(a.data, {"en"})
    used = used_task_uids(RESULTS, a.exclude, a.allow_draws) if not a.tiny else {}
    seen = set().union(*used.values()) if used else set()
    fresh = [t for t in bench if lifebench.task_uid(t, 0) not in seen]
    if len(fresh) < a.rows_per_cell:
        listed = "; ".join(f"{f} ({len(u)})" for f, u in used.items())
        raise ValueError(
            f"only {len(fresh)} of {len(bench)} English LIFEBench tasks are fresh, {a.rows_per_cell} needed: earlier "
            f"runs named the others ({listed}). Readmit a draw no choice of this issue used with --allow_draws FILE, "
            "or lower --rows_per_cell."
        )
    drawn = lifebench.draw_tasks(fresh, a.rows_per_cell, a.seed)
    return [
        {
            "uid": lifebench.task_uid(t, 0),
            "lang": "en",
            "category": t["category"],
            "text": without_length_sentence(t["task"]),
        }
        for t in drawn
    ]


def everyday_prompts(path: str, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    return [
        {"uid": r["id"], "lang": "en", "category": r.get("category", "everyday"), "text": r["prompt"]} for r in rows
    ]


def validation_prompts(a) -> list[dict]:
    """Stage 1's prompts: ``--validation_prompts`` (any prompts file), else the quickstart's held-out prompts beside
    the critic (it never trained on them); neither LIFEBench nor the everyday prompts."""
    from lenvm_rl.data import load_rollouts, prompt_messages
    from lenvm_rl.rollouts import load_prompts

    source = a.validation_prompts or str(Path(a.critic).parent / "rollouts_heldout.jsonl")
    if not Path(source).is_file():
        raise FileNotFoundError(
            f"no validation prompts at {source}: pass --validation_prompts FILE (prompts the critic never trained on, "
            "not LIFEBench), or --epsilon X to skip stage 1"
        )
    if source.endswith(".jsonl") and "completion" in json.loads(Path(source).open().readline() or "{}"):
        prompts = load_rollouts(source)  # a rollouts file: several answers per prompt, each prompt once here
    else:
        prompts = load_prompts(source)
    texts = list(dict.fromkeys(prompt_messages(p["prompt"])[-1]["content"] for p in prompts))
    return [{"uid": f"val-{i}", "lang": "en", "category": "validation", "text": t} for i, t in enumerate(texts)][
        : a.validation_rows
    ]


# ---------------------------------------------------------------------------------------------- cells
def cell_key(a, source: str, mode: str, target: int, arm: str, epsilon: float | None, tasks: list[dict]) -> str:
    """What a cell's answers depend on; a rerun reuses a stored cell only when this matches."""
    settings = {
        "critic": a.critic,
        "generator": a.generator,
        "seed": a.seed,
        "batch_size": a.batch_size,
        "max_batch_tokens": a.max_batch_tokens,
        "max_new_tokens": a.max_new_tokens,
        "max_new_factor": a.max_new_factor,
        "tasks": [t["uid"] for t in tasks],
        "prompts": [t["text"] for t in tasks],
        "cell": [source, mode, target, arm, epsilon],
    }
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def load_cells(path: Path) -> dict:
    cells = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                c = json.loads(line)
            except json.JSONDecodeError:  # an interrupted write: that cell is computed again
                continue
            cells[c["key"]] = c
    return cells


def variant(arm: str, epsilon: float | None) -> str:
    return arm if arm not in GUIDED else f"{arm}/{'tr_off' if epsilon is None else 'tr_on'}"


# ---------------------------------------------------------------------------------------------- verdicts
def choose_epsilon(summaries: list[dict], epsilons: list[float]) -> tuple[float, str]:
    """Stage 1's pre-registered choice from the prompt_lenvm cells at each epsilon."""
    by = {e: [c for c in summaries if c["arm"] == "prompt_lenvm" and c["epsilon"] == e] for e in epsilons}

    def ok(c):
        gap, deg = c["nll_gap_to_plain"], c["degenerate_rate"]
        return gap is not None and gap < GOAL_NLL_GAP and deg is not None and deg < GOAL_DEGENERATE

    qualified = [e for e in epsilons if by[e] and all(ok(c) for c in by[e])]
    if qualified:
        best = max(qualified, key=lambda e: (np.mean([c["ls"] for c in by[e]]), -e))
        return best, "the highest mean LS with every cell's NLL gap < 10 % and degenerate < 5 %"
    gaps = {e: np.mean([c["nll_gap_to_plain"] or 0.0 for c in by[e]]) for e in epsilons if by[e]}
    return min(gaps, key=lambda e: (gaps[e], e)), "no epsilon qualified: the smallest mean NLL gap"


def goal(summaries: list[dict], source: str) -> dict:
    """The issue's goal per (mode, target) and trust-region variant, on one prompt set: prompt_lenvm against
    prompt_only (+10 LS), its NLL gap (< 10 %) and degenerate rate (< 5 %), and natural ends above both prompt_only and
    lenvm (the same variant). A variant meets the goal when every cell does."""
    by = {(c["mode"], c["target"], c["variant"]): c for c in summaries if c["source"] == source}
    out = {}
    for tr in ("tr_off", "tr_on"):
        checks = []
        for mode, target in sorted({(m, t) for m, t, _ in by}):
            ours = by.get((mode, target, f"prompt_lenvm/{tr}"))
            prompt, lenvm = by.get((mode, target, "prompt_only")), by.get((mode, target, f"lenvm/{tr}"))
            if not (ours and prompt and lenvm):
                continue
            gap, deg = ours["nll_gap_to_plain"], ours["degenerate_rate"]
            check = {
                "mode": mode,
                "target": target,
                "ls_margin": ours["ls"] - prompt["ls"],
                "nll_gap": gap,
                "degenerate_rate": deg,
                "natural": ours["natural_end_rate"],
                "natural_prompt_only": prompt["natural_end_rate"],
                "natural_lenvm": lenvm["natural_end_rate"],
            }
            check["met"] = bool(
                check["ls_margin"] >= GOAL_LS_MARGIN
                and gap is not None
                and gap < GOAL_NLL_GAP
                and deg is not None
                and deg < GOAL_DEGENERATE
                and ours["natural_end_rate"] > max(prompt["natural_end_rate"], lenvm["natural_end_rate"])
            )
            checks.append(check)
        out[tr] = {"met": bool(checks) and all(c["met"] for c in checks), "checks": checks}
    return out


def markdown(result: dict) -> str:
    from lenvm_rl.evaluation.lifebench import fmt

    lines = [f"### Guided answers: quality and length ({result['generator']}; critic {result['critic']})", ""]
    lines += [f"Candidates: {result['candidates']}. Epsilon: {result['epsilon']} ({result['epsilon_reason']}).", ""]
    lines += [
        "| prompts | mode | target | arm | n | LS | natural | forced | capped | NLL gap | degenerate | repetitive |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["summary"]:
        lines.append(
            f"| {c['source']} | {c['mode']} | {c['target']} | {c['variant']} | {c['n']} | {fmt(c['ls'])} | "
            f"{fmt(c['natural_end_rate'], share=True)} | {fmt(c['forced_stop_rate'], share=True)} | "
            f"{fmt(c['capped_rate'], share=True)} | {fmt(c['nll_gap_to_plain'], pct=True)} | "
            f"{fmt(c['degenerate_rate'], share=True)} | {fmt(c['repetitive_rate'], share=True)} |"
        )
    for source, verdict in result["goal"].items():
        for tr, g in verdict.items():
            lines += ["", f"Goal on {source}, trust region {tr}: **{'met' if g['met'] else 'not met'}**", ""]
            lines += ["| mode | target | LS margin | NLL gap | degenerate | natural (prompt only, lenvm) | met |"]
            lines += ["|---|---:|---:|---:|---:|---|---|"]
            lines += [
                f"| {c['mode']} | {c['target']} | {c['ls_margin']:+.1f} | {fmt(c['nll_gap'], pct=True)} | "
                f"{fmt(c['degenerate_rate'], share=True)} | {fmt(c['natural'], share=True)} "
                f"({fmt(c['natural_prompt_only'], share=True)}, {fmt(c['natural_lenvm'], share=True)}) | "
                f"{'yes' if c['met'] else 'no'} |"
                for c in g["checks"]
            ]
    lines += ["", f"Ten answers per arm ({result['examples_cell']}):", ""]
    for name, answers in result["examples"].items():
        lines += [f"**{name}**", ""]
        lines += [f"- [{r['num_tokens']} tokens, {r['end']}] {r['text']!r}" for r in answers]
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the run
def parse(argv):
    from lenvm_rl.evaluation.lifebench import HUB_ID
    from lenvm_rl.generation import DEFAULT_CRITIC

    p = argparse.ArgumentParser(prog=f"python -m evals.experiments.{NAME}", description=__doc__.split("\n")[0])
    p.add_argument("--critic", default=DEFAULT_CRITIC, help="LenVM checkpoint (default: the quickstart's)")
    p.add_argument("--generator", default=None, help="hub id or path (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--data", default=HUB_ID, help="LIFEBench: a local .jsonl or the hub id")
    p.add_argument("--everyday", default=str(EVERYDAY), help="the everyday prompts (jsonl: id, category, prompt)")
    p.add_argument("--validation_prompts", default=None, help="stage 1's prompts (default: the critic's held-out)")
    p.add_argument("--validation_rows", type=int, default=30)
    p.add_argument("--rows_per_cell", type=int, default=30, help="LIFEBench tasks per cell (>= 30 for the goal)")
    p.add_argument("--targets", default="16,32,64,128")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--epsilons", default="0.03,0.1,0.3,1", help="stage 1's candidates (nats per step)")
    p.add_argument("--epsilon", type=float, default=None, help="skip stage 1 and use this epsilon")
    p.add_argument("--exclude", action="append", default=[], help="one more file naming used LIFEBench uids")
    p.add_argument("--allow_draws", action="append", default=[], help="a results file whose tasks may be drawn again")
    p.add_argument("--seed", type=int, default=3, help="sampling and the draw (0-2 drew earlier runs' tasks)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_batch_tokens", type=int, default=4096)
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--max_new_factor", type=float, default=2.0)
    p.add_argument("--output_dir", default=f"lenvm_runs/eval/{NAME}")
    p.add_argument("--tiny", action="store_true", help="seconds: target 6, 2 rows a cell, one epsilon, 2 everyday")
    p.add_argument("--workers", type=int, default=0, help="single-thread processes generating cells (0: this one)")
    p.add_argument("--phase", type=int, default=0, choices=(0, 1, 2), help=argparse.SUPPRESS)  # a worker's part
    a = p.parse_args(argv)
    if a.workers < 0:
        raise ValueError(f"--workers must be 0 (this process) or more, got {a.workers}")
    if a.tiny:
        a.targets, a.rows_per_cell, a.validation_rows, a.epsilons, a.max_new_tokens = "6", 2, 2, "0.1", 16
    a.target_list = [int(t) for t in a.targets.split(",") if t.strip()]
    a.mode_list = [m.strip() for m in a.modes.split(",") if m.strip()]
    a.epsilon_list = [float(e) for e in a.epsilons.split(",") if e.strip()]
    from lenvm_rl.trust_region import check_trust_region

    for e in a.epsilon_list + ([a.epsilon] if a.epsilon is not None else []):
        check_trust_region(e)
    if unknown := set(a.mode_list) - set(MODES):
        raise ValueError(f"--modes takes {MODES}, got {sorted(unknown)}")
    if not a.target_list or min(a.target_list) < 1 or max(a.target_list) > a.max_new_tokens:
        raise ValueError(f"--targets must be whole numbers from 1 to --max_new_tokens, got {a.targets!r}")
    if a.rows_per_cell < 1 or a.validation_rows < 1:
        raise ValueError("--rows_per_cell and --validation_rows must be at least 1")
    return a


def run_workers(a, argv: list[str] | None) -> None:
    """Generate the cells in ``a.workers`` single-thread processes that claim cells one by one: first every cell
    that does not depend on the trust region's epsilon (stage 1 and the rest), then, with epsilon chosen from the
    stored stage 1, the others. Two one-thread processes sample about twice as much as one two-thread process at
    these batch sizes on the 2-core CPU."""
    import subprocess

    claims = Path(a.output_dir) / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    for stale in claims.glob("*.claim"):  # claims of a killed run: those cells start again
        stale.unlink()
    flags = list(argv if argv is not None else sys.argv[1:])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for phase in (1, 2):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", f"evals.experiments.{NAME}", *flags, "--phase", str(phase)], env=env
            )
            for _ in range(a.workers)
        ]
        if any(proc.wait() != 0 for proc in procs):
            raise SystemExit(f"a worker failed in phase {phase}; rerun the same command to resume from the cells file")


def append_cell(path: Path, cell: dict) -> None:
    """One line per cell, appended under a lock (workers share the file)."""
    import fcntl

    with path.open("a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        end = f.seek(0, os.SEEK_END)
        f.seek(max(end - 1, 0))
        torn = end > 0 and f.read(1) != b"\n"
        # a line torn by a killed run stays a line of its own (skipped on reading), not a prefix of this one
        f.write((b"\n" if torn else b"") + (json.dumps(cell) + "\n").encode())
        f.flush()


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    if a.workers and not a.phase:
        run_workers(a, argv)  # then below, in this process: every cell is stored; only the report is computed
    from lenvm_rl.candidates import candidate_settings
    from lenvm_rl.data import encode_prompt
    from lenvm_rl.decoding import ConstantScorer
    from lenvm_rl.evaluation import common, lifebench
    from lenvm_rl.length_prompt import length_prompt_text, with_length_prompt

    # 1. prompts, checked before any model loads
    sets = {"lifebench": lifebench_draw(a), "everyday": everyday_prompts(a.everyday, 2 if a.tiny else None)}
    if a.epsilon is None:
        sets = {"validation": validation_prompts(a), **sets}
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / f"{NAME}_cells.jsonl"
    stored = load_cells(cells_path)

    # 2. models
    common.setup_threads()
    critic = common.load_critic(a.critic)
    model, tokenizer = common.load_generator(a.generator, critic)
    settings = candidate_settings(critic)
    print(f"[{NAME}] candidates: {settings.describe()}")
    chat = critic.use_chat_template
    sampling = dict(temperature=settings.temperature, top_p=settings.top_p, use_chat_template=chat)
    summaries, rows_by_cell = [], {}

    def run_cell(source, tasks, groups, mode, target, arm, epsilon):
        """One cell: generate (or reuse), score against plain, append to the cells file."""
        key = cell_key(a, source, mode, target, arm, epsilon, tasks)
        name = variant(arm, epsilon)
        # A worker: a cell stored when it started is reused; any other cell of this run was claimed by whichever
        # worker got to it first (the parent cleared older claims, and phase 2 starts after phase 1 has stored).
        if a.phase and key not in stored and not claim(out / "claims" / f"{key}.claim"):
            return None  # another worker's cell
        if key in stored:
            rows = stored[key]["rows"]
        else:
            budget = length_prompt_text("default", mode, target) if arm in PROMPTED else None
            prompts = [with_length_prompt([{"role": "user", "content": t["text"]}], budget) for t in tasks]
            cap = min(a.max_new_tokens, math.ceil(a.max_new_factor * target))
            desc = f"{source} {mode} {target} {name}"
            if arm in ("plain", "prompt_only"):
                generate = lambda part, **kw: common.sample_plain(  # noqa: E731
                    model, tokenizer, part, max_new_tokens=cap, **sampling, **kw
                )
            else:
                guided = dict(
                    mode=mode,
                    target_tokens=target,
                    max_new_tokens=cap,
                    min_p=settings.min_p,
                    trust_region=epsilon,
                    scorer=ConstantScorer() if arm == "rules_only" else None,
                    **sampling,
                )
                generate = lambda part, batch_size, seed, desc: common.guided(  # noqa: E731
                    model, critic, tokenizer, part, batch_size, desc, seed=seed, **guided
                )
            outs = lifebench.in_groups(groups, prompts, generate, a.seed, desc)
            nll = common.answers_nll(model, tokenizer, prompts, outs, chat, a.batch_size)
            rows = [lifebench.answer_row(t, mode, target, name, o, x) for t, o, x in zip(tasks, outs, nll)]
            for r, asked in zip(rows, prompts):
                r["prompt"] = asked[-1]["content"]  # as the arm saw it
            append_cell(cells_path, {"key": key, "source": source, "variant": name, "rows": rows})
            stored[key] = {"rows": rows}
        rows_by_cell[source, mode, target, name] = rows
        if (source, mode, target, "plain") not in rows_by_cell:  # a worker: plain is another worker's cell
            return None
        plain = rows_by_cell[source, mode, target, "plain"]
        summary = lifebench.cell_summary(rows, plain, mode, name, target)
        summary.update(source=source, arm=arm, variant=name, epsilon=epsilon)
        summaries.append(summary)
        print(
            f"[{NAME}] {source} {mode} {target} {name}: LS {summary['ls']:.1f}, natural "
            f"{100 * summary['natural_end_rate']:.0f} %, NLL gap {lifebench.fmt(summary['nll_gap_to_plain'], pct=True)}"
        )
        return summary

    def run_set(source, tasks, arms_and_epsilons):
        lengths = [len(encode_prompt(tokenizer, t["text"], chat)) for t in tasks]  # similar lengths share a batch
        order = sorted(range(len(tasks)), key=lengths.__getitem__)
        tasks = [tasks[i] for i in order]
        groups = common.length_groups([lengths[i] for i in order], a.batch_size, a.max_batch_tokens)
        for mode in a.mode_list:
            for target in a.target_list:
                for arm, epsilon in arms_and_epsilons:  # plain first: every other arm compares with it
                    run_cell(source, tasks, groups, mode, target, arm, epsilon)
                write_partial()

    def write_partial():
        if a.phase:  # workers hold part of the cells; the parent writes the results
            return
        (out / f"{NAME}.json").write_text(json.dumps({"partial": True, "summary": summaries}, indent=1, default=float))

    stage1 = [("plain", None), ("prompt_only", None)] + [("prompt_lenvm", e) for e in a.epsilon_list]
    if a.phase == 1:  # a worker before epsilon is chosen: every cell that does not need it
        for source, tasks in sets.items():
            off = [("plain", None), ("prompt_only", None)] + [(arm, None) for arm in GUIDED]
            run_set(source, tasks, stage1 if source == "validation" else off)
        return {}

    # 3. stage 1: epsilon on the validation prompts
    if a.epsilon is None:
        run_set("validation", sets.pop("validation"), stage1)
        epsilon, reason = choose_epsilon([c for c in summaries if c["source"] == "validation"], a.epsilon_list)
    else:
        epsilon, reason = a.epsilon, "given (--epsilon)"
    print(f"[{NAME}] trust region epsilon {epsilon:g}: {reason}")

    # 4. stage 2: every arm on LIFEBench and the everyday prompts
    arms = [("plain", None), ("prompt_only", None)] + [(arm, e) for arm in GUIDED for e in (None, epsilon)]
    for source, tasks in sets.items():
        run_set(source, tasks, arms)
    if a.phase:
        return {}

    # 5. verdicts, examples, outputs
    test = [c for c in summaries if c["source"] != "validation"]
    shown = ("everyday", "equal", sorted(a.target_list)[min(1, len(a.target_list) - 1)])
    examples = {
        name: [{k: r[k] for k in ("num_tokens", "end", "text")} for r in rows[:10]]
        for (src, mode, target, name), rows in rows_by_cell.items()
        if (src, mode, target) == shown
    }
    result = {
        "command": " ".join([f"python -m evals.experiments.{NAME}", *(sys.argv[1:] if argv is None else argv)]),
        "critic": a.critic,
        "generator": a.generator or "default",
        "candidates": settings.describe(),
        "epsilon": epsilon,
        "epsilon_reason": reason,
        "tasks": {source: [t["uid"] for t in tasks] for source, tasks in sets.items()},
        "summary": test,
        "validation": [c for c in summaries if c["source"] == "validation"],
        "goal": {source: goal(test, source) for source in sets},
        "examples_cell": " ".join(map(str, shown)),
        "examples": examples,
    }
    return common.write_outputs(out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
