import json

import pytest


@pytest.mark.slow  # an experiment script, tiny
def test_tiny_experiment_runs_every_arm_and_resumes(tiny_causal_dir, tmp_path):
    from evals.experiments.rl_length_shaping import ARMS, main

    out = tmp_path / "exp"
    result = main(["--tiny", "--policy", str(tiny_causal_dir), "--output_dir", str(out)])
    assert sorted({r["arm"] for r in result["runs"]}) == sorted(ARMS)
    for r in result["runs"]:
        assert r["step"] in (0, 1, 2)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["mean_tokens"] > 0
    assert {r["step"] for r in result["runs"]} == {0, 1, 2}
    assert (out / "pareto.png").stat().st_size > 0
    assert "lenvm_relative" in (out / "summary.md").read_text()
    assert result["verdict"][0].startswith("SUCCESS CRITERION") or "not all core arms" in result["verdict"][0]
    assert (out / "audit_lenvm_relative.jsonl").read_text().strip()
    # A rerun reuses every finished run instead of training again.
    before = {p.name: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    again = main(["--tiny", "--policy", str(tiny_causal_dir), "--output_dir", str(out)])
    assert {p.name: p.stat().st_mtime for p in (out / "runs").glob("*.json")} == before
    assert again["runs"] == json.loads((out / "results.json").read_text())["runs"]
    assert (
        main(["--tiny", "--policy", str(tiny_causal_dir), "--output_dir", str(out), "--report_only"])["runs"]
        == again["runs"]
    )
