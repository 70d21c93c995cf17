"""Scoring token-level LIFEBench: LIFEBench's Length Score per answer, one row per answer, one summary per (mode, arm,
target) cell (length, ends, the generator's NLL and rep-4 against plain's on the same prompts) and the benchmark's
averaging over targets."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..ends import p_eos_distribution
from . import common

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


def length_deviation(n_out: int, target: int) -> float:
    return (n_out - target) / target


def length_score(ld: float, mode: str) -> float:
    """LIFEBench's Length Score for one answer (100 = constraint met)."""
    if ld < 0 and mode in ("equal", "at_least"):
        return 100.0 * math.exp(5.0 * ld)
    if ld > 0 and mode in ("equal", "at_most"):
        return 100.0 * math.exp(-2.0 * ld)
    return 100.0


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
