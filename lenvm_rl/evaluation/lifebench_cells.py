"""The resumable cells of token-level LIFEBench: one line per finished (mode, arm, target) cell in
``lifebench_cells.jsonl``, keyed by what its answers depend on, so a rerun (or another run, ``--base_cells``) reuses a
stored cell only when its settings, prompts and rule are the same."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..ends import end_eos_probability, eos_token_ids
from .lifebench_arms import GUIDED_ARMS

CELLS_FILE = "lifebench_cells.jsonl"

# Guided cells whose decoding rule changed since cells were first stored: a stored cell of an older revision is
# recomputed, never reused (a user's cells from before an upgrade are not silently read as the new rule's).
# at_least 2: aim at the target (value-weighted) instead of "predicted long enough".
RULE_REVISIONS = {("at_least", "lenvm"): 2, ("at_least", "rules_only"): 2}


def settings_key(cfg, tasks: list[dict], arm: str, use_chat_template: bool, mode: str) -> str:
    """What a cell's answers depend on (``cfg``: the run's ``LifebenchArguments``); a rerun reuses a stored cell only
    when this matches. The arms without the critic's values (plain, truncate, rules_only) depend on its prompt format
    only, so another critic with the same format reuses them. ``mode`` is required: it adds the rule's revision where
    it changed (``RULE_REVISIONS``), and a caller without it would reuse an older rule's cells."""
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
