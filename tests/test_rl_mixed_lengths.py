import json

import pytest


@pytest.mark.slow  # over ~5 s on 2 cores
def test_tiny_experiment_runs_every_arm_reports_per_kind_and_resumes(tiny_causal_dir, tmp_path):
    from evals.experiments.rl_mixed_lengths import ARMS, main
    from lenvm_rl.rl.tasks import MIXED_KINDS

    out = tmp_path / "exp"
    argv = ["--tiny", "--policy", str(tiny_causal_dir), "--output_dir", str(out)]
    result = main(argv)
    assert {(r["arm"]) for r in result["runs"]} == {arm for arm, _ in ARMS}
    assert {r["kind"] for r in result["runs"]} == {*MIXED_KINDS, "all"}
    assert {r["step"] for r in result["runs"]} == {0, 1, 2}
    for r in result["runs"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["mean_tokens"] > 0
    assert (out / "pareto.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "lenvm_refresh" in summary and all(f"**{k}**" in summary for k in MIXED_KINDS)
    assert result["verdict"][0].startswith("SUCCESS CRITERION")
    assert (out / "audit_lenvm_refresh_c1.jsonl").read_text().strip()
    # The refreshed arm logged the critic's error and its refresh loss; the frozen one no refresh loss.
    refresh = json.loads((out / "runs" / "lenvm_refresh_c1_s0.json").read_text())
    frozen = json.loads((out / "runs" / "lenvm_relative_c1_s0.json").read_text())
    assert all(s["critic_refresh_loss_first"] is not None for s in refresh["train_log"])
    assert all(s["critic_refresh_loss_first"] is None for s in frozen["train_log"])
    # A rerun reuses every finished run instead of training again.
    before = {p.name: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    again = main(argv)
    assert {p.name: p.stat().st_mtime for p in (out / "runs").glob("*.json")} == before
    assert again["runs"] == json.loads((out / "results.json").read_text())["runs"]
    assert main([*argv, "--report_only"])["runs"] == again["runs"]


def test_unknown_arm_is_refused(tiny_causal_dir, tmp_path):
    import pytest

    from evals.experiments.rl_mixed_lengths import main

    with pytest.raises(SystemExit):
        main(["--tiny", "--arms", "task,l2_max", "--policy", str(tiny_causal_dir), "--output_dir", str(tmp_path)])


@pytest.mark.slow  # over ~5 s on 2 cores
def test_time_step_prints_an_estimate(tiny_causal_dir, tmp_path):
    from evals.experiments.rl_mixed_lengths import main

    est = main(["--tiny", "--time_step", "--policy", str(tiny_causal_dir), "--output_dir", str(tmp_path)])
    assert est["step_seconds_lenvm_refresh"] > 0 and est["eval_seconds_full_heldout"] > 0
    # the total is the runs spread over the workers plus the starting policy's evaluation (to rounding)
    expected = est["runs"] * est["run_seconds"] / max(est["workers"], 1) + est["eval_seconds_full_heldout"]
    assert est["total_seconds_without_critic_training"] == pytest.approx(expected, rel=0.02)
    assert est["total_hours_without_critic_training"] == pytest.approx(expected / 3600, rel=0.02)
    assert (tmp_path / "time_estimate.json").is_file()
    assert not list(tmp_path.glob("**/value_head.safetensors"))  # the stand-in critic is not left in the results


@pytest.mark.slow  # two tiny GRPO runs, one of them killed after its first step
def test_a_killed_run_resumes_from_its_checkpoint_with_its_evaluations(tiny_causal_dir, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    import evals.experiments.rl_mixed_lengths as exp

    class Killed(Exception):
        pass

    class KillAfterStepOne(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 1:
                raise Killed

    build = exp.build_trainer

    def build_and_kill(*args, **kwargs):
        trainer, tok = build(*args, **kwargs)
        trainer.add_callback(KillAfterStepOne())
        return trainer, tok

    out = tmp_path / "exp"
    argv = ["--tiny", "--arms", "lenvm_refresh", "--save_steps", "1", "--policy", str(tiny_causal_dir)]
    argv += ["--output_dir", str(out)]
    monkeypatch.setattr(exp, "build_trainer", build_and_kill)
    with pytest.raises(Killed):
        exp.main(argv)
    run_dir = out / "runs" / "lenvm_refresh_c1_s0"
    assert (run_dir / "checkpoint-1" / "critic_refresh.pt").is_file()
    assert json.loads((run_dir / "progress.json").read_text())["step"] == 1
    assert not (out / "runs" / "lenvm_refresh_c1_s0.json").exists()

    monkeypatch.setattr(exp, "build_trainer", build)
    exp.main(argv)
    run = json.loads((out / "runs" / "lenvm_refresh_c1_s0.json").read_text())
    assert run["resumed_from_step"] == 1
    assert [e["step"] for e in run["evals"]] == [1, 2]  # step 1's evaluation came from before the kill
    assert [e["step"] for e in run["train_log"]] == [1, 2]
    assert not run_dir.exists()  # the checkpoints are removed once the run's result is written


def test_ctranslate2_evaluation_samples_the_weights_in_memory_as_hf_does(tiny_causal_dir):
    """The engine converts the policy as it is now (a run's weights move every step), not the folder it came from:
    near-greedy sampling of perturbed weights gives the same answers through both engines."""
    pytest.importorskip("ctranslate2")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.experiments.mixed_eval import evaluate_mixed
    from lenvm_rl.rl.tasks import MIXED_KINDS, mixed_split

    rows = [r for k in MIXED_KINDS for r in [r for r in mixed_split()["eval"] if r["kind"] == k][:3]]
    tok = AutoTokenizer.from_pretrained(tiny_causal_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    before = evaluate_mixed(model, tok, rows, 1, 1e-4, 12, engine="ctranslate2")[1]
    torch.manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 0.5)
    hf = evaluate_mixed(model, tok, rows, 1, 1e-4, 12, engine="hf")[1]
    ct2 = evaluate_mixed(model, tok, rows, 1, 1e-4, 12, engine="ctranslate2")[1]
    assert [c["text"] for c in ct2] == [c["text"] for c in hf]
    assert [c["tokens"] for c in ct2] == [c["tokens"] for c in hf]
    assert [c["text"] for c in ct2] != [c["text"] for c in before]  # the perturbed weights were sampled
    assert [c["kind"] for c in ct2] == [r["kind"] for r in rows]
    with pytest.raises(ValueError, match="unknown evaluation engine"):
        evaluate_mixed(model, tok, rows, 1, 0.7, 12, engine="vllm")


@pytest.mark.slow  # the tiny experiment's critic and start
def test_an_experiment_started_with_one_evaluation_engine_refuses_the_other(tiny_causal_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    from evals.experiments.rl_mixed_lengths import main

    argv = ["--tiny", "--arms", "task", "--policy", str(tiny_causal_dir), "--output_dir", str(tmp_path)]
    main([*argv, "--eval_engine", "hf"])
    assert json.loads((tmp_path / "start.json").read_text())["eval_engine"] == "hf"
    with pytest.raises(SystemExit, match="--eval_engine hf"):
        main([*argv, "--eval_engine", "ctranslate2"])
