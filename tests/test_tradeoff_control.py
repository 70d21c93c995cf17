import json

import numpy as np
import pytest

from evals.experiments import tradeoff_control
from lenvm_rl.evaluation import tradeoff


def point(correct, tokens, **extra):
    return {
        "accuracy": float(np.mean(correct)),
        "mean_tokens": float(np.mean(tokens)),
        "ends": {"natural": len(correct), "forced": 0, "cap": 0},
        "per_answer": {"correct": [float(c) for c in correct], "tokens": [float(t) for t in tokens]},
        **extra,
    }


def run(tilt, n=40, samples=2):
    """A tradeoff.json: a hard-budget curve (20 % right at 10 tokens, 40 % at 40) and the given tilt points."""
    k = n * samples
    low, high = np.arange(k) % 5 == 0, np.arange(k) % 5 < 2
    return {
        "critic": "c",
        "task": "opposites",
        "prompts": n,
        "samples": samples,
        "answers": k,
        "cap": 40,
        "sampling": {"seed": 0},
        "plain_lengths": [40] * k,
        "budget": [point(low, [10] * k, budget=10), point(high, [40] * k, budget=40)],
        "forcing": [],
        "prompted": [],
        "tilt": tilt,
    }


def test_control_tilt_points_against_the_trained_runs_curves(tmp_path):
    k = 80
    trained = run([point(np.arange(k) % 5 < 4, [20] * k, beta=10.0)])  # 80 % right at 20 tokens
    control = run([point(np.arange(k) % 5 == 0, [30] * k, beta=10.0)])  # 20 % right at 30 tokens
    (row,) = tradeoff_control.compare_control(trained, control, n_boot=500)
    assert row["budget_comparison"] == "same tokens"
    # The hard budget at 30 tokens: 20 + (30 - 10) / 30 * 20 = 33.3 %; the control is 13.3 points below.
    assert row["margin_vs_budget"] == pytest.approx(0.2 - (0.2 + 20 / 30 * 0.2))
    assert row["margin_vs_budget_ci95"][1] < 0
    d = row["trained_minus_control"]
    assert d["accuracy"] == pytest.approx(0.6) and d["mean_tokens"] == pytest.approx(-10.0)
    assert d["accuracy_ci95"][0] > 0 and d["mean_tokens_ci95"] == [-10.0, -10.0]
    assert "margin_vs_forcing" not in row and "margin_vs_prompted" not in row  # empty curves: no comparison

    paths = []
    for name, r in (("trained", trained), ("control", control)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(r))
    out = tradeoff_control.main(["--result", str(paths[0]), "--control", str(paths[1]), "--output_dir", str(tmp_path)])
    assert (tmp_path / "tradeoff_control.png").stat().st_size > 0 and out["tilt"][0]["beta"] == 10.0
    assert "+60.0" in (tmp_path / "tradeoff_control.md").read_text()


def test_control_must_share_the_trained_runs_plain_answers():
    k = 80
    trained = run([point([1] * k, [20] * k, beta=10.0)])
    other = run([point([1] * k, [20] * k, beta=10.0)])
    other["plain_lengths"] = [39] + other["plain_lengths"][1:]
    with pytest.raises(ValueError, match="plain answers differ"):
        tradeoff_control.compare_control(trained, other)
    other = run([point([1] * 2 * k, [20] * 2 * k, beta=10.0)], samples=4)
    with pytest.raises(ValueError, match="differ in 'samples'"):
        tradeoff_control.compare_control(trained, other)
    assert tradeoff.prompt_means([1, 0, 1, 1], 2).tolist() == [0.5, 1.0]
