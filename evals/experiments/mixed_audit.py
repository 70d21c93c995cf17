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

from lenvm_rl.rl.tasks import counted_run

_RANGE = re.compile(r"from (\d+) to (\d+)")
_NUMBER = re.compile(r"-?\d+")


def comma_separated(text: str, start: int, stop: int) -> bool:
    """Whether the first count ``start..stop`` in ``text`` is right under the checker *and* has a comma between
    every two of its numbers (list markers such as "1. " still do not count as numbers)."""
    ok, _ = counted_run(text, start, stop)
    if not ok:
        return False
    numbers = [(int(m.group()), m.start(), m.end()) for m in _NUMBER.finditer(text)]
    # the run the checker accepted: the first ``start`` followed by ``start + 1`` (or alone when start == stop)
    for i, (v, _, _) in enumerate(numbers):
        if v == start and (start == stop or [n[0] for n in numbers[i + 1 : i + 2]] == [start + 1]):
            run = numbers[i : i + stop - start + 1]
            break
    else:
        return False
    if [n[0] for n in run] != list(range(start, stop + 1)):  # a list marker sat inside the run: not a plain list
        return False
    return all("," in text[a[2] : b[1]] for a, b in zip(run, run[1:]))


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
