"""The project's tradeoff goal (evals/tradeoff_goals.py): verdicts by hand, and the committed results' own."""

import json
from pathlib import Path

import numpy as np
import pytest

from evals import tradeoff_goals
from evals.tradeoff_goals import goal, markdown, result_goal
from lenvm_rl.evaluation import tradeoff

RESULTS = Path(__file__).resolve().parents[1] / "evals" / "results"


def _point(correct, tokens, **extra):
    return {
        "accuracy": float(np.mean(correct)),
        "mean_tokens": float(np.mean(tokens)),
        "per_answer": {"correct": list(correct), "tokens": list(tokens)},
        **extra,
    }


def test_tradeoff_goal_bootstraps_paired_margins_over_prompts():
    rng = np.random.default_rng(0)
    n, samples = 60, 2
    hard = rng.random(n * samples) < 0.4  # a curve: right 40 % of the time at 10 and 30 tokens
    curve = [_point(hard, [10] * (n * samples)), _point(hard, [30] * (n * samples))]
    # A tilt point at 20 tokens that is right on every prompt the curve gets right, and on 20 more.
    better = hard.copy()
    better[np.flatnonzero(~hard)[:20]] = True
    tilt = [_point(better, [20] * (n * samples), beta=1.0)]
    for q in tilt:
        tradeoff.compare(q, {"budget": curve, "prompted": curve})
    g = goal(tilt, {"budget": curve, "prompted": curve}, samples)
    assert g["margin_vs_prompted"] == pytest.approx(20 / (n * samples))
    lo, hi = g["margin_vs_prompted_ci95"]
    assert 0 < lo < g["margin_vs_prompted"] < hi  # never worse on a prompt: every resample is ahead
    assert g["prompted_comparison"] == "same tokens" and g["met"] is False  # 1.4x the "hard budget": not 3x
    assert g["vs_budget_ratio_ci95"][0] < 3.0 and g["met_with_ci"] is False
    # The same answers as the curve: the point estimate is 0 and the interval straddles it.
    same = [_point(hard, [20] * (n * samples), beta=1.0)]
    tradeoff.compare(same[0], {"budget": curve, "prompted": curve})
    g = goal(same, {"prompted": curve}, samples)
    # Paired: each resample takes the same prompts from both arms, so identical answers differ by exactly 0.
    assert g["margin_vs_prompted"] == pytest.approx(0.0) and g["margin_vs_prompted_ci95"] == [0.0, 0.0]
    assert g["met_with_ci"] is False and g["ci_checks"] == {"prompted": False}  # and no hard budget to read
    with pytest.raises(ValueError, match="do not split"):
        goal(tilt, {"prompted": curve}, samples=7)


def test_tradeoff_goal_met_with_intervals_and_the_eos_bonus_decides_nothing():
    k, samples = 120, 2
    right = np.arange(k) % 10 < 7  # the tilt point: 70 % at 15 tokens
    tilt = [_point(right, [15] * k, beta=20.0)]
    hard = [_point(np.arange(k) % 10 == 0, [10] * k), _point(np.arange(k) % 10 < 2, [40] * k)]  # 10 -> 20 %
    prompted = [_point(np.arange(k) % 10 < 3, [20] * k), _point(np.arange(k) % 10 < 4, [25] * k)]  # longer, worse
    eos = [_point(np.arange(k) % 10 < 8, [12] * k), _point(np.arange(k) % 10 < 8, [30] * k)]  # 80 %: better
    curves = {"budget": hard, "prompted": prompted, "eos_bonus": eos}
    tradeoff.compare(tilt[0], curves)
    g = goal(tilt, curves, samples)
    assert g["prompted_comparison"] == "dominates its shortest point" and g["margin_vs_prompted"] == pytest.approx(0.4)
    assert g["vs_budget_ratio"] == pytest.approx(0.7 / (0.1 + 5 / 30 * 0.1)) and g["vs_budget_ratio_ci95"][0] >= 3
    assert g["met_with_ci"] is True and g["ci_checks"] == {"budget": True, "prompted": True}
    assert g["above_eos_bonus_ci"] is False and g["margin_vs_eos_bonus"] == pytest.approx(-0.1)
    # A prompted curve the tilt point is shorter than but not more accurate than: no comparison, not met.
    better = [_point(np.arange(k) % 10 < 8, [20] * k), _point(np.arange(k) % 10 < 8, [25] * k)]
    g = goal(tilt, {"budget": hard, "prompted": better}, samples)
    assert g["prompted_comparison"] == "outside its range" and g["met_with_ci"] is False


def test_the_goal_reads_the_shortest_shortening_tilt_point_and_its_point_estimates():
    hard = [{"mean_tokens": 10.0, "accuracy": 0.1}, {"mean_tokens": 40.0, "accuracy": 0.4}]
    tilt = [
        {"beta": 0.0, "mean_tokens": 5.0, "accuracy": 0.9},  # beta 0 does not shorten: never the goal's point
        {"beta": 10.0, "mean_tokens": 20.0, "accuracy": 0.61},
        {"beta": 20.0, "mean_tokens": 10.0, "accuracy": 0.31},  # the shortest: 3.1x the hard budget's 10 %
    ]
    for q in tilt:
        tradeoff.compare(q, {"budget": hard})
    g = goal(tilt)
    assert g["beta"] == 20.0 and g["vs_budget_ratio"] == pytest.approx(3.1) and g["met"] is True
    assert "met_with_ci" not in g  # no per-answer scores: no intervals
    tilt[2]["accuracy"] = 0.29
    assert goal(tilt)["met"] is False
    assert goal(tilt[:1]) == {}


def test_the_committed_results_verdicts_are_recomputed_from_their_points():
    """Results written while `lenvm eval tradeoff` still computed the goal carry it: the same block, recomputed
    (intervals included: the bootstrap's resamples are seeded), and the same paragraph as their tradeoff.md."""
    runs = {p: json.loads(p.read_text()) for p in sorted(RESULTS.glob("**/tradeoff.json"))}
    judged = {p: r for p, r in runs.items() if "goal" in r}
    assert sum("met_with_ci" in r["goal"] for r in judged.values()) >= 3  # intervals to compare with
    for path, r in judged.items():
        assert result_goal(r) == r["goal"], path
        md = path.with_suffix(".md").read_text()
        if r["goal"] and "(point estimates)" in md:  # the earliest run's paragraph was worded differently
            assert md.endswith("\n\n" + markdown(r["goal"])), path


def test_the_command_prints_each_runs_verdict(tmp_path, capsys):
    run = tmp_path / "tradeoff.json"
    hard = [{"mean_tokens": 10.0, "accuracy": 0.1}, {"mean_tokens": 40.0, "accuracy": 0.4}]
    run.write_text(json.dumps({"budget": hard, "tilt": [{"beta": 20.0, "mean_tokens": 10.0, "accuracy": 0.5}]}))
    verdict = tradeoff_goals.main([str(run)])[str(run)]
    assert verdict["vs_budget_ratio"] == pytest.approx(5.0) and verdict["met"] is True  # compared on the way
    assert "5.00x the hard budget's accuracy (goal >= 3x)" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="no 'tilt' and 'budget'"):
        tradeoff_goals.main([str(tmp_path / "bad.json")])
