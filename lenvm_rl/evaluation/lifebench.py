"""`lenvm eval lifebench`: token-level LIFEBench, with the critic's share separated from the stop rules'.

Each LIFEBench task is a template with ``{word_count_type}`` and ``{word_count}``; the token-level variant asks
for "<equal to | at most | at least> T tokens" and counts the generator's tokens (EOS not counted). Every arm
sees the same prompt (the constraint is stated in it) and runs the same generator. Arms (``--arms``):

    plain       the generator alone
    truncate    plain's answers cut at the target (``end = "forced"`` where cut): the cheapest way to a maximum
    rules_only  the modes and stop rules of ``lenvm`` on the same code path, with a critic that carries no
                information (:class:`~lenvm_rl.decoding.ConstantScorer`: one value for every candidate, so
                candidates are picked by base probability): what the stop rules achieve alone
    lenvm       our rules (lenvm_rl.decoding, ``--value_tolerance``) with the trained critic
    extreme     the reference code's rules with the trained critic (at most: always the shortest-predicted
                candidate; at least: the longest until the target; equal: the nearest value)

Prompts: the LIFEBench tasks of ``--langs`` (Summarization is skipped; ``--rows_per_cell N`` draws N of them,
seeded and stratified: as evenly as possible across every (language, category)), plus three everyday prompts
(category ``user``; ``--no_user_prompts`` leaves them out); ``--exclude_tasks RUN.json[,RUN2.json]`` leaves out earlier
runs' LIFEBench tasks before the draw (a decision made on one draw, checked on prompts it never saw). Data: the hub
id ``LIFEBench/LIFEBench`` by default, ``--data PATH`` for a local ``.jsonl`` copy.

Per (mode, arm, target) cell (the ``summary`` list of lifebench.json):

    ls, mean_abs_ld     LIFEBench's Length Score: ``LD = (L_out - T) / T``; ``LS = 100 exp(5 LD)`` below the target
                        for Equal To / At Least, ``100 exp(-2 LD)`` above it for Equal To / At Most, else 100
    natural_end_rate    share of answers that ended with the generator's own EOS (the only ``finished`` ones): no
                        rule forced it and the generator gave it at least ``--natural_eos_min_prob`` (lenvm_rl.ends)
    forced_stop_rate    share a rule (or the truncation) ended, or whose EOS a rule chose below that probability;
                        capped_rate: share cut by the generation cap
    p_eos_median, p_eos_p5   the generator's own probability of EOS where the arm's answers ended (those a rule did
                        not put EOS into), at the sampling temperature; plain_p_eos_median / _p5: the same at plain
                        sampling's ends on the same prompts, the reference for the threshold
    mean_nll            the generator's own mean token negative log-probability of the answer, at temperature 1
                        (EOS counted for natural ends): a quality signal beside length
    nll_gap_to_plain    ``(mean_nll_arm - mean_nll_plain) / mean_nll_plain`` over the same prompts
    degenerate_rate     share of answers whose NLL exceeds the 95th percentile of the plain answers' NLL
    mean_rep4           mean share of an answer's token 4-grams that repeat an earlier one (rep-4; 0 = none, near
                        1 = a loop): a loop is likely text, so the NLL alone would count it as good
    repetitive_rate     share of answers whose rep-4 exceeds the 95th percentile of the plain answers' rep-4

Sampling: every arm samples at ``--temperature`` / ``--top_p`` (the quickstart's 0.7 / 0.9); the guided arms' candidate
set adds the ``--min_p`` floor (default 0.05, lenvm_rl.candidates; 0 = none, as runs before the floor). The run prints
and records (``candidates`` in lifebench.json) these settings beside the critic's own rollouts' sampling.

Every arm stops at ``min(max_new_tokens, max_new_factor * T)`` tokens (default factor 2), so LD is at most
+1 and an Equal To / At Most answer scores at least 100 exp(-2) = 13.5: the cap can only flatter plain.

Outputs in ``--output_dir``: lifebench.json / .md, lifebench.png (LS and natural-end rate against the target,
per arm), lifebench_quality.png (LS against the NLL gap, per arm) and lifebench_cells.jsonl: one line per
finished cell, written as it is computed; a rerun with the same settings skips the cells already there.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..candidates import DEFAULT_MIN_P, candidate_settings, check_min_p, recorded_sampling
from ..decoding import DEFAULT_VALUE_TOLERANCE
from ..ends import NATURAL_EOS_MIN_PROB, relabel
from . import common
from .lifebench_arms import ARMS, GUIDED_ARMS, truncated
from .lifebench_cells import (
    CELLS_FILE,
    RULE_REVISIONS,
    append_cell,
    fill_p_eos,
    load_cells,
    merge_cells,
    settings_key,
)
from .lifebench_report import fmt, markdown, plot, plot_quality
from .lifebench_scoring import (
    SUMMARY_KEYS,
    aggregate,
    answer_row,
    cell_summary,
    length_deviation,
    length_score,
    rep4,
)
from .lifebench_tasks import (
    HUB_ID,
    MODES,
    check_not_trained_on,
    draw_tasks,
    load_tasks,
    task_uid,
    tasks_of_run,
    token_prompt,
    user_tasks,
    without_tasks_of_runs,
)

# The command: its options and its run. Its parts, one module each: lifebench_tasks (the prompts and the draw),
# lifebench_arms, lifebench_scoring (Length Score, cell summaries), lifebench_cells (the resumable store) and
# lifebench_report (figures, markdown); their public names are importable from here too.
__all__ = [
    "ARMS",
    "CELLS_FILE",
    "GUIDED_ARMS",
    "HUB_ID",
    "MODES",
    "NAME",
    "RULE_REVISIONS",
    "SUMMARY_KEYS",
    "LifebenchArguments",
    "aggregate",
    "answer_row",
    "append_cell",
    "cap_for",
    "cell_summary",
    "check_not_trained_on",
    "draw_tasks",
    "fill_p_eos",
    "fmt",
    "in_groups",
    "length_deviation",
    "length_score",
    "load_cells",
    "load_tasks",
    "main",
    "markdown",
    "merge_cells",
    "parse_config",
    "parse_with",
    "plot",
    "plot_quality",
    "rep4",
    "run",
    "run_series",
    "settings_key",
    "task_uid",
    "tasks_of_run",
    "token_prompt",
    "truncated",
    "user_tasks",
    "without_tasks_of_runs",
]

NAME = "lifebench"


@dataclass
class LifebenchArguments(common.EvalArguments):
    """Arguments of `lenvm eval lifebench` (besides the shared ``critic``, ``generator``, ``output_dir``, ``seed``,
    ``batch_size``, ``tiny``): every field is a flag (``--rows_per_cell 40``) and a key of a ``--config`` YAML
    file; lists are comma-separated strings. ``--tiny``: target 6 and the first two LIFEBench tasks (plus the
    everyday prompts)."""

    data: str = field(default=HUB_ID, metadata={"help": f"LIFEBench: the hub id ({HUB_ID}) or a local .jsonl copy."})
    langs: str = field(
        default="en", metadata={"help": "Comma-separated: en, cn (the default generator is English-only)."}
    )
    targets: str = field(
        default="16,32,64,128",
        metadata={"help": "Target token counts, comma-separated (LIFEBench uses 32-1024 and more)."},
    )
    modes: str = field(default=",".join(MODES), metadata={"help": f"Comma-separated, of {', '.join(MODES)}."})
    arms: str = field(default=",".join(ARMS), metadata={"help": f"Comma-separated, of {', '.join(ARMS)}."})
    rows_per_cell: int | None = field(
        default=None,
        metadata={
            "help": "LIFEBench tasks per cell: a seeded draw spread evenly over (language, category); default all."
        },
    )
    exclude_tasks: str | None = field(
        default=None,
        metadata={
            "help": f"Earlier runs' {NAME}.json or {NAME}_cells.jsonl, comma-separated: their LIFEBench tasks are "
            "left out before the draw, so a decision is checked on prompts it was not made on."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "First N LIFEBench tasks only (before the draw)."})
    per_category: int | None = field(default=None, metadata={"help": "First N tasks of each language and category."})
    user_prompts: bool = field(
        default=True, metadata={"help": "Add three everyday prompts (category 'user') to the English tasks."}
    )
    max_new_tokens: int = field(
        default=512, metadata={"help": "Hard generation cap of every arm; no target may exceed it."}
    )
    max_new_factor: float = field(
        default=2.0,
        metadata={
            "help": "Per-target cap, in multiples of the target (at least 1; the lower of the two caps applies)."
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of every arm."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling of every arm."})
    min_p: float = field(
        default=DEFAULT_MIN_P,
        metadata={
            "help": "Guided arms: a candidate below min_p x the most probable one is never chosen by a rule "
            "(lenvm_rl.candidates; 0 = no floor, as runs before it)."
        },
    )
    value_tolerance: float = field(
        default=DEFAULT_VALUE_TOLERANCE,
        metadata={
            "help": "lenvm / rules_only: length traded for probability, as a share of the remaining tokens "
            "(0 = the nearest value; see lenvm_rl.decoding)."
        },
    )
    natural_eos_min_prob: float = field(
        default=NATURAL_EOS_MIN_PROB,
        metadata={
            "help": "A guided answer's EOS counts as natural only when the generator gave it at least this probability "
            "(at the sampling temperature); below it the rule chose the end (lenvm_rl.ends)."
        },
    )
    nll_batch_size: int = field(default=8, metadata={"help": "Rows per forward when scoring answers' NLL."})
    base_cells: str | None = field(
        default=None,
        metadata={
            "help": f"Another run's {NAME}_cells.jsonl: the cells --output_dir lacks are copied in, and those with "
            "the same settings are reused (e.g. the critic-free arms, for a new critic with the same prompt format)."
        },
    )
    max_batch_tokens: int = field(
        default=4096,
        metadata={
            "help": "Padded prompt tokens per generate call (rows x the longest prompt; prompts are sorted by "
            "length): LIFEBench mixes 60- and 1,500-token prompts."
        },
    )


def parse_config(cfg: LifebenchArguments) -> tuple[list[int], list[str], list[str]]:
    """Targets, modes and arms, checked before anything is loaded."""
    if cfg.tiny:
        cfg.targets, cfg.limit = "6", 2
    try:
        targets = [int(t) for t in str(cfg.targets).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--targets must be comma-separated whole numbers, got {cfg.targets!r}") from None
    modes = [m.strip() for m in cfg.modes.split(",") if m.strip()]
    arms = [a.strip() for a in cfg.arms.split(",") if a.strip()]
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {MODES}")
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
    if not targets or not modes or not arms:
        raise ValueError("give at least one target, mode and arm")
    for t in targets:
        if t < 1:
            raise ValueError(f"targets must be positive token counts, got {t}")
        if t > cfg.max_new_tokens:
            raise ValueError(
                f"target {t} exceeds max_new_tokens={cfg.max_new_tokens}; raise --max_new_tokens or lower the target"
            )
    if cfg.max_new_factor < 1:
        raise ValueError(
            f"max_new_factor must be >= 1 (the cap may not fall below the target), got {cfg.max_new_factor}"
        )
    if cfg.rows_per_cell is not None and cfg.rows_per_cell < 1:
        raise ValueError(f"rows_per_cell must be >= 1, got {cfg.rows_per_cell}")
    if not math.isfinite(cfg.value_tolerance) or cfg.value_tolerance < 0:
        raise ValueError(f"value_tolerance must be >= 0, got {cfg.value_tolerance}")
    check_min_p(cfg.min_p)
    if cfg.base_cells and not Path(cfg.base_cells).is_file():
        raise FileNotFoundError(f"--base_cells {cfg.base_cells} not found: pass another run's {CELLS_FILE}")
    return targets, modes, arms


def parse_with(own_type: type, prog: str, argv: list[str] | None, required_arms: tuple[str, ...]):
    """(``own_type``'s options, :class:`LifebenchArguments`) for a script that runs this evaluation several times
    (evals/experiments); an ``--arms`` list without the arms the script compares is refused."""
    from ..args import make_parser, parse

    own, cfg = parse(make_parser([own_type, LifebenchArguments], prog), argv)
    arms = {a.strip() for a in cfg.arms.split(",")}
    if missing := [a for a in required_arms if a not in arms]:
        raise ValueError(
            f"--arms must include {', '.join(required_arms)}: {', '.join(missing)} missing from {cfg.arms!r}"
        )
    return own, cfg


def run_series(cfg: LifebenchArguments, changes: dict[str, dict], runs_dir: str) -> dict[str, dict]:
    """:func:`run` once per ``name -> {field: value}`` in ``changes``, each in ``runs_dir/name``. Each run starts from
    the cells of the one before (the first from ``cfg.base_cells``), so what the runs share (plain answers, the
    critic-free arms) is generated once."""
    from dataclasses import replace

    results, base = {}, cfg.base_cells
    for name, fields in changes.items():
        out = Path(runs_dir) / name
        print(f"[{NAME}] {name} -> {out}")
        results[name] = run(replace(cfg, output_dir=str(out), base_cells=base, **fields), f"lenvm eval {NAME} ({name})")
        base = str(out / CELLS_FILE)
    return results


def candidate_report(critic, cfg: LifebenchArguments) -> dict:
    """The guided arms' candidate settings, printed and returned for the result, beside the sampling the critic's
    rollouts were drawn with (None when it records none)."""
    used = candidate_settings(critic, cfg.temperature, cfg.top_p, cfg.min_p)
    recorded = recorded_sampling(critic)
    print(
        f"[{NAME}] candidates: {used.describe()}; the critic's rollouts: {recorded[0] if recorded else 'not recorded'}"
    )
    return {**used.as_dict(), "critic_rollout_sampling": recorded[0] if recorded else None}


def cap_for(target: int, cfg: LifebenchArguments) -> int:
    return min(cfg.max_new_tokens, math.ceil(cfg.max_new_factor * target))


def in_groups(groups: list[tuple[int, int]], prompts: list, generate, seed: int, desc: str) -> list[dict]:
    """``generate(part, batch_size=, seed=, desc=)`` over the length groups, in order; group g samples with
    ``seed + g``."""
    out = []
    for g, (a, b) in enumerate(groups):
        out += generate(prompts[a:b], batch_size=b - a, seed=seed + g, desc=f"{desc} [{g + 1}/{len(groups)}]")
    return out


def main(argv=None) -> dict:
    cfg = common.parse_args(LifebenchArguments, NAME, __doc__.split("\n")[0], argv)
    return run(cfg, common.command_line(NAME, argv))


def run(cfg: LifebenchArguments, command: str = f"lenvm eval {NAME}") -> dict:
    targets, modes, arms = parse_config(cfg)  # every check that needs no model comes first
    cfg.output_dir = cfg.output_dir or f"lenvm_runs/eval/{NAME}"
    langs = {lang.strip() for lang in cfg.langs.split(",") if lang.strip()}
    bench = load_tasks(cfg.data, langs, cfg.limit, cfg.per_category)
    if cfg.exclude_tasks:
        bench = without_tasks_of_runs(bench, cfg.exclude_tasks, f"{cfg.data} ({cfg.langs})")
    if cfg.rows_per_cell is not None:
        bench = draw_tasks(bench, cfg.rows_per_cell, cfg.seed)
    tasks = [dict(t, uid=task_uid(t, i)) for i, t in enumerate(bench)]
    if cfg.user_prompts and "en" in langs:
        tasks += [dict(t, uid=t["id"]) for t in user_tasks()]
    if len({t["uid"] for t in tasks}) != len(tasks):
        tasks = [dict(t, uid=f"{t['uid']}#{i}") for i, t in enumerate(tasks)]  # ids repeated in the file
    common.setup_threads()
    critic = common.load_critic(cfg.critic)
    check_not_trained_on(cfg.critic, bench)
    model, tokenizer = common.load_generator(cfg.generator, critic)
    candidates = candidate_report(critic, cfg)

    from ..data import encode_prompt

    # Similar lengths share a batch: tasks sorted by prompt length (the order is part of the cell key) and cut into
    # length groups, sized on one wording (Equal To, the largest target) for every mode and target: the others
    # differ by a token or two.
    lengths = [
        len(encode_prompt(tokenizer, [{"role": "user", "content": content}], critic.use_chat_template))
        for content in (token_prompt(t["task"], t["lang"], MODES[0], max(targets)) for t in tasks)
    ]
    order = sorted(range(len(tasks)), key=lengths.__getitem__)
    tasks = [tasks[i] for i in order]
    groups = common.length_groups([lengths[i] for i in order], cfg.batch_size, cfg.max_batch_tokens)

    from ..decoding import ConstantScorer

    out_dir = Path(cfg.output_dir)
    cells_path = out_dir / CELLS_FILE
    # the other run's cells copied in: this run's file grows, the other run's stays as it is
    stored = merge_cells(Path(cfg.base_cells), cells_path) if cfg.base_cells else load_cells(cells_path)
    reused = 0
    sampling = dict(
        temperature=cfg.temperature, top_p=cfg.top_p, use_chat_template=critic.use_chat_template
    )  # the critic's prompt format, for every arm; the seed is per length group (in_groups)
    guided = {
        "rules_only": dict(rule="soft", scorer=ConstantScorer(), value_tolerance=cfg.value_tolerance),
        "lenvm": dict(rule="soft", value_tolerance=cfg.value_tolerance),
        "extreme": dict(rule="extreme"),
    }
    min_prob = cfg.natural_eos_min_prob
    cells = {}
    for mode in modes:
        for target in targets:
            prompts = [[{"role": "user", "content": token_prompt(t["task"], t["lang"], mode, target)}] for t in tasks]
            cap = cap_for(target, cfg)
            plain_outs = None
            for arm in ["plain"] + [a for a in arms if a != "plain"]:  # plain first: the others compare with it
                key = settings_key(cfg, tasks, arm, critic.use_chat_template, mode)
                if (mode, arm, target, key) in stored:
                    rows = cells[mode, arm, target] = stored[mode, arm, target, key]["rows"]
                    for r in rows:  # cells stored before rep-4 was recorded get it here
                        r["rep4"] = rep4(r)
                    if fill_p_eos(model, tokenizer, prompts, rows, cfg.temperature, critic.use_chat_template):
                        append_cell(cells_path, dict(stored[mode, arm, target, key], rows=rows))  # the newest wins
                    if arm in GUIDED_ARMS:  # the label follows the threshold: a stored cell is read at this one
                        relabel(rows, min_prob)
                    reused += 1
                    continue
                desc = f"{arm} {mode} {target}"
                if arm == "plain":
                    generate = partial(common.sample_plain, model, tokenizer, max_new_tokens=cap, **sampling)
                    outs = in_groups(groups, prompts, generate, cfg.seed, desc)
                elif arm == "truncate":
                    if plain_outs is None:
                        plain_outs = [
                            {
                                "text": r["text"],
                                "token_ids": r["token_ids"],
                                "num_tokens": r["num_tokens"],
                                "end": r["end"],
                            }
                            for r in cells[mode, "plain", target]
                        ]
                    outs = truncated(plain_outs, target, tokenizer)
                else:
                    generate = partial(
                        common.guided,
                        model,
                        critic,
                        tokenizer,
                        mode=mode,
                        target_tokens=target,
                        max_new_tokens=cap,
                        natural_eos_min_prob=min_prob,
                        min_p=cfg.min_p,
                        **guided[arm],
                        **sampling,
                    )
                    outs = in_groups(groups, prompts, generate, cfg.seed, desc)
                if arm == "plain":
                    plain_outs = outs
                nll = common.answers_nll(model, tokenizer, prompts, outs, critic.use_chat_template, cfg.nll_batch_size)
                rows = [answer_row(t, mode, target, arm, o, x) for t, o, x in zip(tasks, outs, nll)]
                cells[mode, arm, target] = rows
                summary = cell_summary(rows, cells[mode, "plain", target], mode, arm, target)
                append_cell(
                    cells_path,
                    {"mode": mode, "arm": arm, "target": target, "key": key, "summary": summary, "rows": rows},
                )
                print(
                    f"[lifebench] {desc}: mean tokens {np.mean([r['num_tokens'] for r in rows]):.1f}, "
                    f"LS {summary['ls']:.1f}, natural {100 * summary['natural_end_rate']:.0f} %, "
                    f"NLL {fmt(summary['mean_nll'], digits=2)} ({fmt(summary['nll_gap_to_plain'], pct=True)})"
                )
    if reused:
        print(f"[lifebench] reused {reused} finished cells from {cells_path}")

    summary = [
        cell_summary(cells[m, a, t], cells[m, "plain", t], m, a, t)
        for m in modes
        for a in ARMS
        if a in arms
        for t in targets
    ]
    overall = []
    for m in modes:
        for a in (a for a in ARMS if a in arms):
            agg = aggregate([r for t in targets for r in cells[m, a, t]])
            overall.append({"mode": m, "arm": a, "ls": agg["ls"], "abs_ld": agg["abs_ld"]})
    light = [
        {k: v for k, v in r.items() if k not in ("text", "token_ids")}
        for m in modes
        for a in arms
        for t in targets
        for r in cells[m, a, t]
    ]
    result = {
        "command": command,
        "critic": cfg.critic,
        "generator": cfg.generator or "default",
        "data": cfg.data,
        "langs": cfg.langs,
        "tasks": len(tasks),
        "categories": dict(Counter(t["category"] for t in tasks)),
        "targets": targets,
        "modes": modes,
        "arms": arms,
        "config": asdict(cfg),
        "candidates": candidates,
        "cells_file": str(cells_path),
        "summary": summary,
        "overall": overall,
        "rows": light,
    }
    plot(summary, out_dir / f"{NAME}.png")
    plot_quality(summary, out_dir / f"{NAME}_quality.png")
    return common.write_outputs(out_dir, NAME, result, markdown(result))
