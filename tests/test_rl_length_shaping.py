import json


def test_tiny_experiment_runs_every_arm_and_resumes(tiny_causal_dir, tmp_path):
    from evals.rl_length_shaping import ARMS, main

    out = tmp_path / "exp"
    result = main(["--tiny", "--policy", str(tiny_causal_dir), "--output-dir", str(out)])
    assert list(result["arms"]) == list(ARMS)
    for rows in result["arms"].values():
        assert [r["step"] for r in rows] == [1, 2]
        assert all(0.0 <= r["task_reward"] <= 1.0 and r["mean_tokens"] > 0 for r in rows)
    assert (out / "rl_length_shaping.png").stat().st_size > 0
    assert "lenvm_adv" in (out / "summary.md").read_text()
    # A rerun with the same settings reuses every finished arm instead of training again.
    saved = json.loads((out / "results.json").read_text())
    again = main(["--tiny", "--policy", str(tiny_causal_dir), "--output-dir", str(out)])
    assert again["arms"] == saved["arms"]
