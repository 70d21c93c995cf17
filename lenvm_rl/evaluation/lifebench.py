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

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..candidates import DEFAULT_MIN_P, candidate_settings, check_min_p, recorded_sampling
from ..decoding import DEFAULT_VALUE_TOLERANCE
from ..ends import NATURAL_EOS_MIN_PROB, end_eos_probability, eos_token_ids, p_eos_distribution, relabel
from . import common

NAME = "lifebench"
HUB_ID = "LIFEBench/LIFEBench"
MODES = ("equal", "at_most", "at_least")
WORDING = {
    "en": {"equal": "equal to", "at_most": "at most", "at_least": "at least"},
    "cn": {"equal": "等于", "at_most": "最多", "at_least": "至少"},
}
ARMS = ("plain", "truncate", "rules_only", "lenvm", "extreme")
REQUIRED_FIELDS = ("lang", "category", "task")
USER_PROMPTS = (
    "Explain how a bicycle works.",
    "Write a short poem about autumn.",
    "How do I make a good cup of coffee at home?",
)
USER_REQUIREMENT = "\n\n[Requirement] Your answer must be {word_count_type} {word_count} words long."
CELLS_FILE = f"{NAME}_cells.jsonl"
SUMMARY_KEYS = (
    "mode",
    "arm",
    "target",
    "n",
    "ls",
    "mean_abs_ld",
    "natural_end_rate",
    "forced_stop_rate",
    "capped_rate",
    "mean_nll",
    "nll_gap_to_plain",
    "degenerate_rate",
    "mean_rep4",
    "repetitive_rate",
    "p_eos_median",
    "p_eos_p5",
    "plain_p_eos_median",
    "plain_p_eos_p5",
)
GUIDED_ARMS = ("rules_only", "lenvm", "extreme")  # their EOS may be a rule's choice: labelled by the threshold


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


def length_deviation(n_out: int, target: int) -> float:
    return (n_out - target) / target


def length_score(ld: float, mode: str) -> float:
    """LIFEBench's Length Score for one answer (100 = constraint met)."""
    if ld < 0 and mode in ("equal", "at_least"):
        return 100.0 * math.exp(5.0 * ld)
    if ld > 0 and mode in ("equal", "at_most"):
        return 100.0 * math.exp(-2.0 * ld)
    return 100.0


def load_tasks(source: str, langs: set[str], limit: int | None = None, per_category: int | None = None) -> list[dict]:
    """LIFEBench rows from a local ``.jsonl`` or the hub id; Summarization rows are skipped (as in the local file).
    Rows without LIFEBench's fields (``lang``, ``category``, ``task`` with its placeholders) are a clear error."""
    if Path(source).is_file():
        rows = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()]
    else:
        from datasets import load_dataset

        rows = list(load_dataset(source, split="train"))
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED_FIELDS if k not in r]
        if missing:
            raise ValueError(
                f"{source} row {i} lacks LIFEBench's fields {missing}: a LIFEBench row has "
                f"{list(REQUIRED_FIELDS)} (the task with {{word_count_type}} / {{word_count}}); pass "
                f"--data a LIFEBench .jsonl or the hub id {HUB_ID}."
            )
    rows = [r for r in rows if r.get("lang") in langs and str(r.get("category", "")).lower() != "summarization"]
    if not rows:
        raise ValueError(f"{source} has no rows in languages {sorted(langs)}")
    for r in rows:
        if "{word_count_type}" not in r["task"] or "{word_count}" not in r["task"]:
            raise ValueError(f"LIFEBench row {r.get('id')} lacks the {{word_count_type}} / {{word_count}} placeholders")
    if per_category:  # the first N of each (lang, category), in file order
        seen = Counter()
        kept = []
        for r in rows:
            seen[r["lang"], r.get("category")] += 1
            if seen[r["lang"], r.get("category")] <= per_category:
                kept.append(r)
        rows = kept
    return rows[:limit] if limit else rows


def draw_tasks(tasks: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` tasks, seeded and stratified: each (language, category) is shuffled, then they are taken in turn, so
    the categories are as evenly represented as their sizes allow. All of them when ``n`` covers every task."""
    groups = defaultdict(list)
    for t in tasks:
        groups[t["lang"], str(t.get("category"))].append(t)
    rng = random.Random(seed)
    return common.take_in_turn([rng.sample(groups[k], len(groups[k])) for k in sorted(groups)], n)


def task_uid(task: dict, index: int) -> str:
    return f"{task['lang']}:{task.get('id', index)}"


def tasks_of_run(path: str) -> set[str]:
    """The LIFEBench task uids (``lang:id``) answered in an earlier run's json or cells file (not the ``user`` ones)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--exclude_tasks {path} not found: pass an earlier run's {NAME}.json or {CELLS_FILE}")
    if p.suffix == ".jsonl":
        rows = [r for c in load_cells(p).values() for r in c["rows"]]
    else:
        rows = json.loads(p.read_text()).get("rows", [])
    if any("uid" not in r for r in rows):
        raise ValueError(f"--exclude_tasks {path}: its rows have no 'uid'; pass a {NAME}.json or {CELLS_FILE}")
    uids = {r["uid"] for r in rows if r.get("category") != "user"}
    if not uids:
        raise ValueError(f"--exclude_tasks {path} lists no LIFEBench task: pass an earlier run's {NAME}.json or cells")
    return uids


def user_tasks() -> list[dict]:
    """The everyday prompts as LIFEBench-style rows (category ``user``)."""
    return [
        {"id": f"user-{i}", "lang": "en", "category": "user", "task": p + USER_REQUIREMENT}
        for i, p in enumerate(USER_PROMPTS, 1)
    ]


def token_prompt(task: str, lang: str, mode: str, target: int) -> str:
    """The task with a token-level requirement: '... must be at most 64 tokens long.'"""
    text = task.replace("{word_count} words", "{word_count} tokens").replace("{word_count}字", "{word_count}个token")
    return text.replace("{word_count_type}", WORDING[lang][mode]).replace("{word_count}", str(target))


def check_not_trained_on(critic_path: str, tasks: list[dict]) -> None:
    """The critic must never have seen LIFEBench's prompts (checked against the rollouts beside it)."""
    heads = {t["task"].split("{word_count_type}")[0][:200] for t in tasks}
    seen = common.critic_training_prompts(critic_path)
    if any(text[:200] in heads or any(text.startswith(h) for h in heads) for text in seen):
        raise ValueError(f"The critic at {critic_path} was trained on LIFEBench prompts; train it on other prompts.")


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


# ------------------------------------------------------------------------------------------ metrics
def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def rep4(row: dict) -> float | None:
    """A row's rep-4 (rows stored before it was recorded carry their token ids)."""
    return row["rep4"] if "rep4" in row else common.repeated_ngram_share(row["token_ids"])


def _share_above_plain_p95(values: list[float], plain_values: list[float]) -> float | None:
    if not values or not plain_values:
        return None
    threshold = float(np.percentile(plain_values, 95))
    return float(np.mean([x > threshold for x in values]))


def cell_summary(rows: list[dict], plain_rows: list[dict], mode: str, arm: str, target: int) -> dict:
    """One line of the ``summary`` list; the quality terms compare with the plain answers to the same prompts."""
    n = len(rows)
    ends = Counter(r["end"] for r in rows)
    plain_nll = {r["uid"]: r["nll"] for r in plain_rows if r["nll"] is not None and math.isfinite(r["nll"])}
    pairs = [
        (r["nll"], plain_nll[r["uid"]])
        for r in rows
        if r["uid"] in plain_nll and r["nll"] is not None and math.isfinite(r["nll"])
    ]
    gap = None
    if pairs and np.mean([p for _, p in pairs]) > 0:
        plain_mean = float(np.mean([p for _, p in pairs]))
        gap = (float(np.mean([a for a, _ in pairs])) - plain_mean) / plain_mean
    nlls = [r["nll"] for r in rows if r["nll"] is not None and math.isfinite(r["nll"])]
    reps = [x for x in map(rep4, rows) if x is not None]
    plain_reps = [x for x in map(rep4, plain_rows) if x is not None]
    ends_p = p_eos_distribution(
        r.get("p_eos") for r in rows if r["end"] != "cap" and not r.get("rule_forced", r["end"] == "forced")
    )
    plain_p = p_eos_distribution(r.get("p_eos") for r in plain_rows if r["end"] == "natural")
    return {
        "mode": mode,
        "arm": arm,
        "target": target,
        "n": n,
        "ls": _mean(r["ls"] for r in rows),
        "mean_abs_ld": _mean(abs(r["ld"]) for r in rows),
        "natural_end_rate": ends["natural"] / max(n, 1),
        "forced_stop_rate": ends["forced"] / max(n, 1),
        "capped_rate": ends["cap"] / max(n, 1),
        "mean_nll": _mean(nlls),
        "nll_gap_to_plain": gap,
        "degenerate_rate": _share_above_plain_p95(nlls, list(plain_nll.values())),
        "mean_rep4": _mean(reps),
        "repetitive_rate": _share_above_plain_p95(reps, plain_reps),
        "p_eos_median": ends_p.get("median"),
        "p_eos_p5": ends_p.get("p5"),
        "plain_p_eos_median": plain_p.get("median"),
        "plain_p_eos_p5": plain_p.get("p5"),
    }


def aggregate(rows: list[dict]) -> dict:
    """Mean LS and mean |LD| per target, then over targets (the benchmark's averaging)."""
    by_target = {}
    for t in sorted({r["target"] for r in rows}):
        sel = [r for r in rows if r["target"] == t]
        by_target[t] = {
            "ls": float(np.mean([r["ls"] for r in sel])),
            "abs_ld": float(np.mean([abs(r["ld"]) for r in sel])),
            "mean_tokens": float(np.mean([r["num_tokens"] for r in sel])),
            "finished": float(np.mean([r["finished"] for r in sel])),
        }
    return {
        "ls": float(np.mean([v["ls"] for v in by_target.values()])),
        "abs_ld": float(np.mean([v["abs_ld"] for v in by_target.values()])),
        "by_target": by_target,
    }


def answer_row(task: dict, mode: str, target: int, arm: str, out: dict, nll: float) -> dict:
    ld = length_deviation(out["num_tokens"], target)
    return {
        "uid": task["uid"],
        "id": task.get("id"),
        "lang": task["lang"],
        "category": task.get("category"),
        "mode": mode,
        "target": target,
        "arm": arm,
        "num_tokens": out["num_tokens"],
        "end": out["end"],
        "finished": out["end"] == "natural",
        "p_eos": out.get("p_eos"),
        "rule_forced": out.get("rule_forced", out["end"] == "forced"),
        "ld": ld,
        "ls": length_score(ld, mode),
        "nll": nll if math.isfinite(nll) else None,
        "rep4": common.repeated_ngram_share(out["token_ids"]),
        "text": out["text"],
        "token_ids": out["token_ids"],
    }


def truncated(outs: list[dict], target: int, tokenizer) -> list[dict]:
    """Plain answers cut at the target: a cut one (longer, or stopped by the cap) ends ``"forced"``."""
    cut = []
    for o in outs:
        if o["num_tokens"] > target or o["end"] == "cap":
            ids = list(o["token_ids"][:target])
            cut.append(
                {
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "token_ids": ids,
                    "num_tokens": len(ids),
                    "end": "forced",
                    "finished": False,
                    "p_eos": None,
                    "rule_forced": True,
                }
            )
        else:
            cut.append(dict(o))
    return cut


def fill_p_eos(model, tokenizer, prompts, rows: list[dict], temperature: float, use_chat_template: bool, batch_size=8):
    """Rows stored before ``p_eos`` was recorded get it from one forward of the generator over prompt + answer
    (:func:`lenvm_rl.ends.end_eos_probability`, at the run's temperature); ``rows[i]`` answers ``prompts[i]``.
    Returns whether any row changed (the caller stores the cell again)."""
    from ..data import encode_prompt

    todo = [i for i, r in enumerate(rows) if r["end"] != "cap" and "p_eos" not in r]
    if not todo:
        return False
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    probs = end_eos_probability(
        model,
        [encode_prompt(tokenizer, prompts[i], use_chat_template) for i in todo],
        [rows[i]["token_ids"] for i in todo],
        eos_token_ids(tokenizer, model),
        temperature,
        batch_size,
        pad,
    )
    for i, x in zip(todo, probs):
        rows[i]["p_eos"] = x
    return True


# ------------------------------------------------------------------------------------------ resumable cells
# Guided cells whose decoding rule changed since cells were first stored: a stored cell of an older revision is
# recomputed, never reused. at_least 2: aim at the target (value-weighted) instead of "predicted long enough".
RULE_REVISIONS = {("at_least", "lenvm"): 2, ("at_least", "rules_only"): 2}


def settings_key(cfg: LifebenchArguments, tasks: list[dict], arm: str, use_chat_template: bool, mode: str) -> str:
    """What a cell's answers depend on; a rerun reuses a stored cell only when this matches. The arms without the
    critic's values (plain, truncate, rules_only) depend on its prompt format only, so another critic with the same
    format reuses them. ``mode`` is required: it adds the rule's revision where it changed (``RULE_REVISIONS``), and a
    caller without it would reuse an older rule's cells."""
    base = {
        "use_chat_template": use_chat_template,
        "generator": cfg.generator,
        "tasks": [t["uid"] for t in tasks],
        "prompts": [t["task"] for t in tasks],
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,  # the length groups set the random draws
        "max_batch_tokens": cfg.max_batch_tokens,
        "max_new_tokens": cfg.max_new_tokens,
        "max_new_factor": cfg.max_new_factor,
    }
    if arm in ("lenvm", "rules_only"):
        base["value_tolerance"] = cfg.value_tolerance
    if arm in GUIDED_ARMS and cfg.min_p:  # cells stored before the floor (none) keep their keys
        base["min_p"] = cfg.min_p
    if (mode, arm) in RULE_REVISIONS:
        base["rule_revision"] = RULE_REVISIONS[mode, arm]
    if arm in ("lenvm", "extreme"):
        head = Path(cfg.critic) / "value_head.safetensors"
        base["critic"] = cfg.critic
        base["critic_mtime"] = head.stat().st_mtime if head.is_file() else None
    return hashlib.sha1(json.dumps(base, sort_keys=True).encode()).hexdigest()[:16]


def load_cells(path: Path) -> dict:
    """Finished cells by ``(mode, arm, target, key)``; a broken (interrupted) line is skipped with a note."""
    cells = {}
    if not path.is_file():
        return cells
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            c = json.loads(line)
        except json.JSONDecodeError:
            print(f"[lifebench] {path}:{lineno} is not valid JSON (an interrupted write?); that cell is recomputed")
            continue
        cells[c["mode"], c["arm"], c["target"], c["key"]] = c
    return cells


def merge_cells(base: Path, path: Path) -> dict:
    """Append to ``path`` the cells of ``base`` it lacks (a copy when it has none), so a folder that already holds
    some cells (an earlier run with fewer modes, say) still reuses the other run's; returns ``path``'s cells after
    the merge, as :func:`load_cells` would."""
    cells = load_cells(path)
    for k, c in load_cells(base).items():
        if k not in cells:
            append_cell(path, c)
            cells[k] = c
    return cells


def append_cell(path: Path, cell: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(cell) + "\n")


# ------------------------------------------------------------------------------------------ figures and tables
ARM_COLORS = {
    "plain": "tab:gray",
    "truncate": "tab:brown",
    "rules_only": "tab:blue",
    "lenvm": "tab:orange",
    "extreme": "tab:green",
}
MODE_MARKERS = {"equal": "o", "at_most": "v", "at_least": "^"}


def plot(summary: list[dict], path: Path) -> Path:
    """LS (top) and natural-end rate (bottom) against the target, one line per arm, one column per mode."""
    from ..plots import plt, save_figure

    modes = [m for m in MODES if any(c["mode"] == m for c in summary)]
    fig, axes = plt.subplots(2, len(modes), figsize=(5 * len(modes), 7.5), squeeze=False, sharex="col")
    for j, mode in enumerate(modes):
        for arm in ARMS:
            cells = sorted((c for c in summary if c["mode"] == mode and c["arm"] == arm), key=lambda c: c["target"])
            if not cells:
                continue
            targets = [c["target"] for c in cells]
            axes[0, j].plot(targets, [c["ls"] for c in cells], marker="o", label=arm, color=ARM_COLORS[arm])
            axes[1, j].plot(
                targets, [100 * c["natural_end_rate"] for c in cells], marker="o", label=arm, color=ARM_COLORS[arm]
            )
        axes[0, j].set(title=mode.replace("_", " "), ylim=(0, 105))
        axes[1, j].set(xlabel="target tokens", ylim=(-3, 103))
        for ax in axes[:, j]:
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("Length Score (100 = met)")
    axes[1, 0].set_ylabel("natural ends (% of answers)")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle("token-level LIFEBench by target")
    return save_figure(fig, path)


def plot_quality(summary: list[dict], path: Path) -> Path:
    """LS against the NLL gap to plain, one panel per arm; a point per (mode, target) cell."""
    from ..plots import plt, save_figure

    arms = [a for a in ARMS if any(c["arm"] == a for c in summary)]
    fig, axes = plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.8), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], arms):
        for c in (c for c in summary if c["arm"] == arm and c["nll_gap_to_plain"] is not None):
            ax.scatter(
                100 * c["nll_gap_to_plain"],
                c["ls"],
                marker=MODE_MARKERS[c["mode"]],
                color=ARM_COLORS[arm],
                s=36,
                alpha=0.8,
            )
            ax.annotate(
                str(c["target"]),
                (100 * c["nll_gap_to_plain"], c["ls"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axvline(0, color="gray", lw=0.8, ls="--")
        ax.set(title=arm, xlabel="NLL gap to plain (%)", ylim=(0, 105))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("Length Score")
    for mode, marker in MODE_MARKERS.items():
        axes[0, -1].scatter([], [], marker=marker, color="black", label=mode.replace("_", " "))
    axes[0, -1].legend(fontsize=8)
    fig.suptitle("length against quality (labels: target tokens; left of 0 = likelier text than plain)")
    return save_figure(fig, path)


def fmt(x, pct: bool = False, digits: int = 1, share: bool = False) -> str:
    """A figure for the markdown tables: a share as ``37 %`` (``share``), a relative gap as ``+12.5 %`` (``pct``), else
    a plain number; None (no value, e.g. no finite NLL) as ``-``. Shared by the experiments that tabulate cells."""
    if x is None:
        return "-"
    if share:
        return f"{100 * x:.0f} %"
    return f"{100 * x:+.{digits}f} %" if pct else f"{x:.{digits}f}"


def p_eos_cell(c: dict, prefix: str) -> str:
    median, p5 = c.get(f"{prefix}p_eos_median"), c.get(f"{prefix}p_eos_p5")
    return "-" if median is None else f"{median:.2f} ({p5:.3f})"


def markdown(result: dict) -> str:
    lines = [
        f"### Token-level LIFEBench ({result['tasks']} prompts: {result['categories']}; lang {result['langs']}; "
        f"targets {result['targets']}; generator {result['generator']})",
        "",
        f"natural: EOS no rule forced, where the generator gave it at least p_eos = "
        f"{result['config'].get('natural_eos_min_prob', NATURAL_EOS_MIN_PROB)} (lenvm_rl.ends)",
        "",
        "| mode | arm | target | n | LS | mean abs(LD) | natural | forced | capped | mean NLL | NLL gap | degenerate | "
        "rep-4 | repetitive | p_eos at ends: median (p5) | plain's p_eos: median (p5) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["summary"]:
        lines.append(
            f"| {c['mode']} | {c['arm']} | {c['target']} | {c['n']} | {fmt(c['ls'])} | "
            f"{fmt(c['mean_abs_ld'], share=True)} | {fmt(c['natural_end_rate'], share=True)} | "
            f"{fmt(c['forced_stop_rate'], share=True)} | {fmt(c['capped_rate'], share=True)} | "
            f"{fmt(c['mean_nll'], digits=2)} | {fmt(c['nll_gap_to_plain'], pct=True)} | "
            f"{fmt(c['degenerate_rate'], share=True)} | {fmt(c.get('mean_rep4'), digits=3)} | "
            f"{fmt(c.get('repetitive_rate'), share=True)} | {p_eos_cell(c, '')} | {p_eos_cell(c, 'plain_')} |"
        )
    lines += [
        "",
        "LS averaged over targets (the benchmark's averaging):",
        "",
        "| mode | arm | LS | mean abs(LD) |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {o['mode']} | {o['arm']} | {o['ls']:.1f} | {100 * o['abs_ld']:.0f} % |" for o in result["overall"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ the run
def without_tasks_of_runs(bench: list[dict], paths: str, source: str) -> list[dict]:
    """``bench`` less the tasks earlier runs answered (``--exclude_tasks``, comma-separated files); refuses a list
    naming no file, a file whose tasks this data lacks (it would silently leave out less), and keeping no task."""
    files = [p.strip() for p in paths.split(",") if p.strip()]
    if not files:
        raise ValueError(f"--exclude_tasks {paths!r} names no file: pass earlier runs' {NAME}.json or {CELLS_FILE}")
    have = {task_uid(t, 0) for t in bench}
    if any("id" not in t for t in bench) or len(have) != len(bench):
        raise ValueError(f"--exclude_tasks needs a unique 'id' on every task of {source}")
    seen = set()
    for f in files:
        listed = tasks_of_run(f)
        if missing := listed - have:
            raise ValueError(
                f"--exclude_tasks {f}: {len(listed)} tasks listed, {len(missing)} of them not in {source}; pass a "
                "run on the same data and languages"
            )
        seen |= listed
    kept = [t for t in bench if task_uid(t, 0) not in seen]
    if not kept:
        raise ValueError(f"--exclude_tasks {paths} leaves no LIFEBench task in {source}")
    return kept


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
