"""The prompts of token-level LIFEBench: its tasks (local ``.jsonl`` or the hub), a seeded stratified draw, the
everyday prompts, the token-level wording of each constraint, and the tasks earlier runs answered (``--exclude_tasks``:
a decision made on one draw is checked on prompts it never saw)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from . import common
from .lifebench_cells import CELLS_FILE, load_cells

HUB_ID = "LIFEBench/LIFEBench"
MODES = ("equal", "at_most", "at_least")
WORDING = {
    "en": {"equal": "equal to", "at_most": "at most", "at_least": "at least"},
    "cn": {"equal": "等于", "at_most": "最多", "at_least": "至少"},
}
REQUIRED_FIELDS = ("lang", "category", "task")
USER_PROMPTS = (
    "Explain how a bicycle works.",
    "Write a short poem about autumn.",
    "How do I make a good cup of coffee at home?",
)
USER_REQUIREMENT = "\n\n[Requirement] Your answer must be {word_count_type} {word_count} words long."


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


def tasks_of_run(path: str) -> set[str]:
    """The LIFEBench task uids (``lang:id``) answered in an earlier run's json or cells file (not the ``user`` ones)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"--exclude_tasks {path} not found: pass an earlier run's lifebench.json or {CELLS_FILE}"
        )
    if p.suffix == ".jsonl":
        rows = [r for c in load_cells(p).values() for r in c["rows"]]
    else:
        rows = json.loads(p.read_text()).get("rows", [])
    if any("uid" not in r for r in rows):
        raise ValueError(f"--exclude_tasks {path}: its rows have no 'uid'; pass a lifebench.json or {CELLS_FILE}")
    uids = {r["uid"] for r in rows if r.get("category") != "user"}
    if not uids:
        raise ValueError(
            f"--exclude_tasks {path} lists no LIFEBench task: pass an earlier run's lifebench.json or cells"
        )
    return uids


def without_tasks_of_runs(bench: list[dict], paths: str, source: str) -> list[dict]:
    """``bench`` less the tasks earlier runs answered (``--exclude_tasks``, comma-separated files); refuses a list
    naming no file, a file whose tasks this data lacks (it would silently leave out less), and keeping no task."""
    files = [p.strip() for p in paths.split(",") if p.strip()]
    if not files:
        raise ValueError(f"--exclude_tasks {paths!r} names no file: pass earlier runs' lifebench.json or {CELLS_FILE}")
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
