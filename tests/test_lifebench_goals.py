"""The project's LIFEBench goal (evals/lifebench_goals.py): verdicts by hand, and the committed results' own."""

import json
from pathlib import Path

import pytest
from conftest import summary_cell

from evals import lifebench_goals
from evals.lifebench_goals import bound_goal_met, goal

RESULTS = Path(__file__).resolve().parents[1] / "evals" / "results"


def test_goal_compares_lenvm_with_rules_only_per_target():
    summary = [
        summary_cell("equal", "rules_only", 16, 60.0, 0.10),
        summary_cell("equal", "lenvm", 16, 70.0, 0.80),  # exactly +10 LS and 80 % natural: met
        summary_cell("equal", "rules_only", 32, 60.0, 0.10),
        summary_cell("equal", "lenvm", 32, 75.0, 0.79),  # LS fine, too few natural ends: not met
        summary_cell("equal", "rules_only", 64, 60.0, 0.10),
        summary_cell("equal", "lenvm", 64, 69.9, 0.95),  # natural fine, LS short of +10: not met
        summary_cell("at_most", "rules_only", 16, 100.0, 0.20),
        summary_cell("at_most", "lenvm", 16, 96.0, 0.50),  # +30 points natural at LS >= 95: met
        summary_cell("at_most", "rules_only", 32, 100.0, 0.20),
        summary_cell("at_most", "lenvm", 32, 100.0, 0.49),  # 29 points: not met
        summary_cell("at_least", "rules_only", 16, 100.0, 0.20),
        summary_cell("at_least", "lenvm", 16, 94.0, 0.90),  # natural fine, LS below 95: not met
        summary_cell("at_least", "rules_only", 32, 100.0, 0.20),
        summary_cell("at_least", "lenvm", 32, 95.0, 0.60),  # +40 points at LS exactly 95: met
        summary_cell("at_least", "plain", 16, 50.0, 1.0),  # not compared
    ]
    g = goal(summary)
    met = {(c["mode"], c["target"]): c["met"] for c in g["checks"]}
    assert met == {
        ("equal", 16): True,
        ("equal", 32): False,
        ("equal", 64): False,
        ("at_most", 16): True,
        ("at_most", 32): False,
        ("at_least", 16): False,
        ("at_least", 32): True,
    }
    assert [(c["mode"], c["target"]) for c in g["checks"]] == sorted(met)  # one check per cell, in order
    assert g["met"] is False
    only_met = [c for c in summary if met.get((c["mode"], c["target"]))]
    assert goal(only_met)["met"] is True
    assert goal([summary_cell("equal", "lenvm", 16, 90.0, 1.0)]) is None  # no control arm: no verdict


def test_a_margin_of_exactly_thirty_points_meets_the_bound_goal():
    margin = 42 / 60 - 24 / 60
    assert margin < 0.30  # 0.2999... in floats
    assert bound_goal_met(margin, 95.0) and not bound_goal_met(41 / 60 - 24 / 60, 100.0)
    assert not bound_goal_met(margin, 94.99)
    for mode in ("at_most", "at_least"):  # the same through goal(), in both bound modes
        cells = [summary_cell(mode, "rules_only", 16, 100.0, 24 / 60), summary_cell(mode, "lenvm", 16, 100.0, 42 / 60)]
        assert goal(cells)["met"] is True
        cells[1] = summary_cell(mode, "lenvm", 16, 100.0, 41 / 60)
        assert goal(cells)["met"] is False


@pytest.mark.parametrize(
    "ls, gap, degenerate, repetitive, met",
    [
        (61.0, 0.09, 0.04, 0.0, True),
        (59.0, 0.01, 0.0, 0.0, False),  # no LS gain over the rules
        (80.0, 0.10, 0.0, 0.0, False),  # NLL gap of 10 %: not under it
        (80.0, 0.05, 0.05, 0.0, False),  # 5 % degenerate: not under it
        (80.0, None, 0.0, 0.0, False),  # no NLL: no verdict of quality
        (61.0, 0.09, 0.04, 0.04, True),
        (80.0, 0.05, 0.0, 0.05, False),  # 5 % repetitive (loops, whose NLL looks fine): not under it
        (80.0, 0.05, 0.0, None, False),
    ],
)
def test_quality_goal(ls, gap, degenerate, repetitive, met):
    for mode in ("equal", "at_most", "at_least"):
        cells = [
            summary_cell(mode, "rules_only", 16, 60.0, 0.1),
            summary_cell(mode, "lenvm", 16, ls, 0.9, gap, degenerate, repetitive),
        ]
        assert goal(cells)["quality_met"] is met


def test_the_committed_results_verdicts_are_recomputed_from_their_summary():
    """Results written while `lenvm eval lifebench` still computed the goal carry it: the same block, recomputed."""
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("**/lifebench.json"))]
    judged = [r for r in runs if "goal" in r]
    assert any(r["goal"] for r in judged)  # at least one committed verdict to compare with
    for r in judged:
        assert goal(r["summary"]) == r["goal"]


def test_the_command_prints_each_runs_verdict(tmp_path, capsys):
    run = tmp_path / "lifebench.json"
    cells = [summary_cell("at_most", "rules_only", 16, 100.0, 0.2), summary_cell("at_most", "lenvm", 16, 96.0, 0.5)]
    run.write_text(json.dumps({"summary": cells}))
    assert lifebench_goals.main([str(run)]) == {str(run): goal(cells)}
    out = capsys.readouterr().out
    assert "**met**" in out and "| at_most | 16 | 96.0 | 100.0 | 50 % | 20 % | yes |" in out
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="no 'summary'"):
        lifebench_goals.main([str(tmp_path / "bad.json")])
