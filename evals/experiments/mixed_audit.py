"""The hand audit of the `mixed` runs, read mechanically: what the pre-registered checker lets through.

Reading the step-40 completions of the first finished runs showed a hole the checker's notes had named before the
runs ("the separator is not checked"): every arm with a length term writes its counts without the commas that every
`count` prompt asks for ("1  2  3 ..."), which saves a token per number. This module counts that over the stored
audit completions (``evals[-1]["completions"]`` of each run), so the report can give a second, stricter reading of
`count` beside the pre-registered one: correct *and* separated by commas as asked. It is a reading added after the
runs, reported as such; the criterion stays the pre-registered one.
"""

from __future__ import annotations

import re

from lenvm_rl.rl.tasks import count_spans

_RANGE = re.compile(r"from (\d+) to (\d+)")
_DIGIT = re.compile(r"\d")


def comma_separated(text: str, start: int, stop: int) -> bool:
    """Whether the first count ``start..stop`` in ``text`` is right under the checker *and* has a comma between
    every two of its numbers, with no list marker ("2. ") between them: a numbered list is not a comma list."""
    ok, spans = count_spans(text, start, stop)
    gaps = [text[a[1] : b[0]] for a, b in zip(spans, spans[1:])]
    return ok and all("," in gap and not _DIGIT.search(gap) for gap in gaps)


def count_range(prompt: str) -> tuple[int, int]:
    found = _RANGE.search(prompt)
    if not found:
        raise ValueError(f"not a count prompt of the mixed task: {prompt!r}")
    return int(found.group(1)), int(found.group(2))


def audit_summary(completions: list[dict]) -> dict:
    """Counts over audited completions (dicts with ``kind``, ``prompt``, ``text``, ``correct``, ``truncated``)."""
    one = [c for c in completions if c["kind"] == "one"]
    count = [c for c in completions if c["kind"] == "count"]
    with_commas = [c for c in count if c["correct"] and comma_separated(c["text"], *count_range(c["prompt"]))]
    return {
        "one": len(one),
        "one_correct": sum(c["correct"] for c in one),
        "count": len(count),
        "count_correct": sum(c["correct"] for c in count),
        "count_correct_with_commas": len(with_commas),
        "cut": sum(bool(c.get("truncated")) for c in completions),
    }
