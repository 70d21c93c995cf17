import json
from types import SimpleNamespace

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
    # --tiny runs every arm at its own small coefficients, not the core ones the criterion is fixed for, so it
    # must not judge it (test_verdict_met_only_when_every_check_holds checks the judged cases).
    assert result["verdict"] == ["criterion: not all core arms have finished"]
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


def test_audit_files_come_from_the_reported_coefficient(tmp_path):
    """audit_<arm>.jsonl holds the final completions of the arm's reported run, not of a sweep point that sorts
    first (kimi_c0.5_s0 sorts before kimi_c1_s0)."""
    from evals.experiments.rl_length_shaping import REPORTED, job_name, write_audits

    runs = tmp_path / "runs"
    runs.mkdir()
    for coef, seed in ((0.5, 0), (REPORTED["kimi"], 0), (REPORTED["kimi"], 1)):
        final = {"step": 20, "completions": [{"word": "alive", "text": f"coef {coef:g} seed {seed}"}]}
        run = {"arm": "kimi", "coef": coef, "seed": seed, "evals": [{"step": 10}, final]}
        (runs / f"{job_name('kimi', coef, seed)}.json").write_text(json.dumps(run))
    written = write_audits(tmp_path, {"kimi": REPORTED["kimi"], "l1_max": REPORTED["l1_max"]})
    assert written == [tmp_path / "audit_kimi.jsonl"]  # l1_max has no run: no audit file from another setting
    rows = [json.loads(line) for line in (tmp_path / "audit_kimi.jsonl").read_text().splitlines()]
    assert rows == [{"word": "alive", "text": f"coef {REPORTED['kimi']:g} seed 0"}]


def test_reported_coefficients_are_the_results_rows():
    from evals.experiments.rl_length_shaping import ARMS, CORE, JOBS, REPORTED

    assert set(REPORTED) == set(ARMS) and all(REPORTED[arm] == coef for arm, coef in CORE)
    # every reported arm runs at its coefficient; lenvm_seq runs the three seeds `relative` is paired with
    assert all((arm, coef, 0) in JOBS for arm, coef in REPORTED.items())
    assert {seed for arm, coef, seed in JOBS if (arm, coef) == ("lenvm_seq", REPORTED["lenvm_seq"])} == {0, 1, 2}


def test_fp32_flag_keeps_added_runs_paired_with_the_recorded_fp32_runs(monkeypatch):
    import lenvm_rl.defaults
    from evals.experiments.rl_length_shaping import use_bf16

    monkeypatch.setattr(lenvm_rl.defaults, "native_bf16", lambda: True)  # a machine with AVX512-BF16
    assert use_bf16(SimpleNamespace(tiny=False, fp32=False))
    assert not use_bf16(SimpleNamespace(tiny=False, fp32=True))
    assert not use_bf16(SimpleNamespace(tiny=True, fp32=False))


def _cell(accuracy, tokens, eos_only=0.0):
    return {
        "accuracy": accuracy,
        "mean_tokens": tokens,
        "accuracy_std": 0.01,
        "mean_tokens_std": 0.5,
        "eos_only_share": eos_only,
    }


def test_verdict_met_only_when_every_check_holds():
    from evals.experiments.rl_length_shaping import verdict

    base = {("task", 0.0): _cell(0.5, 20), ("kimi", 1.0): _cell(0.5, 20), ("l1_max", 16.0): _cell(0.5, 20)}
    met = verdict({**base, ("lenvm_relative", 1.0): _cell(0.5, 15)})  # 25 % shorter at the same accuracy
    assert met[0] == "SUCCESS CRITERION: MET" and not any("NOT met" in c for c in met[1:])
    longer = verdict({**base, ("lenvm_relative", 1.0): _cell(0.5, 19)})  # only 5 % shorter: beats no baseline
    assert longer[0] == "SUCCESS CRITERION: NOT MET" and any(c.startswith("vs kimi: NOT met") for c in longer)
    collapsed = verdict({**base, ("lenvm_relative", 1.0): _cell(0.5, 15, eos_only=0.2)})
    assert collapsed[0] == "SUCCESS CRITERION: NOT MET" and "collapse guard (EOS-only < 5 %): NOT met" in collapsed[-1]
    dominated = verdict({**base, ("lenvm_relative", 1.0): _cell(0.5, 15), ("soft_overlong", 48.0): _cell(0.6, 14)})
    assert dominated[0] == "SUCCESS CRITERION: NOT MET" and any(
        c.startswith("dominated by soft_overlong") for c in dominated
    )
    assert verdict(base) == ["criterion: not all core arms have finished"]


def test_jobs_flag_picks_named_runs_and_rejects_unknown_names():
    from evals.experiments.rl_length_shaping import ARMS, jobs, main

    a = SimpleNamespace(tiny=False, arms=",".join(ARMS), jobs="lenvm_relative_c1_s2,lenvm_seq_c1_s0")
    assert jobs(a) == [("lenvm_seq", 1.0, 0), ("lenvm_relative", 1.0, 2)]
    assert len(jobs(SimpleNamespace(tiny=False, arms=",".join(ARMS), jobs=None))) > 2
    with pytest.raises(SystemExit, match="unknown run names.*lenvm_relative_c3_s0"):
        main(["--jobs", "lenvm_relative_c3_s0", "--report_only"])


def test_given_critic_needs_a_quickstart_dir_and_reads_its_report(tmp_path):
    from evals.experiments.rl_length_shaping import given_critic

    with pytest.raises(SystemExit, match="model/ and metrics.json"):
        given_critic(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "metrics.json").write_text(json.dumps({"length_prediction": {"mre": 0.21}}))
    assert given_critic(str(tmp_path)) == (str(tmp_path / "model"), {"mre": 0.21})
