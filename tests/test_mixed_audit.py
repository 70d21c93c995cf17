"""evals/experiments/mixed_audit.py: the second reading of `count` answers (right under the checker and
comma-separated as the prompt asks), on hand-written answers."""

import pytest

from evals.experiments.mixed_audit import audit_summary, comma_separated, count_range


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1, 2, 3", True),
        ("[1, 2, 3]", True),
        ("1,2,3", True),
        ("1  2  3", False),  # right under the checker, no commas
        ("1 2, 3", False),  # one gap without a comma
        ("1. 1\n2. 2\n3. 3", False),  # a numbered list
        ("1. 1,\n2. 2,\n3. 3", False),  # list markers between the numbers: not a comma list
        ("1, 2, 3, 4", False),  # wrong under the checker (runs on past 3)
        ("0, 1, 2, 3", True),  # the count starts at 1
    ],
)
def test_comma_separated(text, expected):
    assert comma_separated(text, 1, 3) is expected


def test_audit_summary_counts_each_reading():
    prompt = "List the numbers from 1 to 3, separated by commas."
    rows = [
        {"kind": "count", "prompt": prompt, "text": "1, 2, 3", "correct": True, "truncated": False},
        {"kind": "count", "prompt": prompt, "text": "1 2 3", "correct": True, "truncated": False},
        {"kind": "count", "prompt": prompt, "text": "1, 2", "correct": False, "truncated": True},
        {"kind": "one", "prompt": "...", "text": "cold", "correct": True, "truncated": False},
    ]
    assert audit_summary(rows) == {
        "one": 1,
        "one_correct": 1,
        "count": 3,
        "count_correct": 2,
        "count_correct_with_commas": 1,
        "cut": 1,
    }
    assert count_range(prompt) == (1, 3)
    with pytest.raises(ValueError, match="not a count prompt"):
        count_range("What is the opposite of hot?")
