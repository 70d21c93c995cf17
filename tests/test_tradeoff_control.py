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
    out = tradeoff_control.compare_control(trained, [control], n_boot=500)
    (row,) = out["control_tilt"]
    assert row["budget_comparison"] == "same tokens"
    # The hard budget at 30 tokens: 20 + (30 - 10) / 30 * 20 = 33.3 %; the control is 13.3 points below.
    assert row["margin_vs_budget"] == pytest.approx(0.2 - (0.2 + 20 / 30 * 0.2))
    assert row["margin_vs_budget_ci95"][1] < 0
    d = row["trained_minus_control"]
    assert d["accuracy"] == pytest.approx(0.6) and d["mean_tokens"] == pytest.approx(-10.0)
    assert d["accuracy_ci95"][0] > 0 and d["mean_tokens_ci95"] == [-10.0, -10.0]
    assert "margin_vs_forcing" not in row and "margin_vs_prompted" not in row  # empty curves: no comparison
    (mine,) = out["trained_tilt"]  # the trained point against the curves: 80 % at 20 tokens vs 26.7 %
    assert mine["margin_vs_budget"] == pytest.approx(0.8 - (0.2 + 10 / 30 * 0.2))

    # An EOS-bonus run (no tilt of its own) brings its curve; the trained point is compared with it.
    eos = run([])
    eos["eos_bonus"] = [
        point(np.arange(k) % 5 < 3, [15] * k, bonus=1.0),
        point(np.arange(k) % 5 < 4, [25] * k, bonus=2.0),
    ]
    out = tradeoff_control.compare_control(trained, [control, eos], n_boot=500)
    (mine,) = out["trained_tilt"]
    assert mine["margin_vs_eos_bonus"] == pytest.approx(0.8 - 0.7) and mine["eos_bonus_comparison"] == "same tokens"
    assert len(out["control_tilt"]) == 1  # the EOS-bonus run has no tilt point
    with pytest.raises(ValueError, match="two runs bring the EOS bonus b = 1"):
        tradeoff_control.compare_control(trained, [eos, eos])

    paths = []
    for name, r in (("trained", trained), ("control", control), ("eos", eos)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(r))
    argv = ["--result", str(paths[0]), "--control", f"{paths[1]},{paths[2]}", "--output_dir", str(tmp_path)]
    out = tradeoff_control.main(argv)
    assert (tmp_path / "tradeoff_control.png").stat().st_size > 0 and out["control_tilt"][0]["beta"] == 10.0
    md = (tmp_path / "tradeoff_control.md").read_text()
    assert "+60.0" in md and "+10.0" in md  # trained minus control; trained over the EOS bonus


def test_control_must_share_the_trained_runs_plain_answers():
    k = 80
    trained = run([point([1] * k, [20] * k, beta=10.0)])
    other = run([point([1] * k, [20] * k, beta=10.0)])
    other["plain_lengths"] = [39] + other["plain_lengths"][1:]
    with pytest.raises(ValueError, match="plain answers differ"):
        tradeoff_control.compare_control(trained, [other])
    other = run([point([1] * 2 * k, [20] * 2 * k, beta=10.0)], samples=4)
    with pytest.raises(ValueError, match="differ in 'samples'"):
        tradeoff_control.compare_control(trained, [other])
    assert tradeoff.prompt_means([1, 0, 1, 1], 2).tolist() == [0.5, 1.0]
