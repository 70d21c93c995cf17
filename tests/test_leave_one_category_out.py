"""evals/experiments/leave_one_category_out.py: each fold trains without exactly its category (with the run's
gamma) and is judged on that category's held-out prompts beside the run's critic; pooling, reuse and bad input.
The fold's training is faked (it is `train_and_report`, tested with the quickstart)."""

import json

import numpy as np
import pytest
from test_broad_categories import GAMMA, categorised, save_critic

from evals.experiments import leave_one_category_out as loco
from lenvm_rl.metrics import finished_lengths_by_prompt, per_prompt_truth
from lenvm_rl.returns import return_consistent_length

CATS = ["list", "story", "yes_no"]


def predictions(critic_dir, records, gamma):
    return loco.predictions(critic_dir, {r["prompt_id"]: r["prompt"] for r in records}, gamma)


@pytest.mark.slow  # an experiment script, tiny
def test_each_fold_leaves_out_its_category_and_pools_every_prompt_once(
    tmp_path, tokenizer, tiny_causal_dir, monkeypatch
):
    import lenvm_rl.quickstart as qs

    run = tmp_path / "run"
    train = categorised(tokenizer, CATS, 6, 1, seed=10)
    held = [dict(r, prompt_id="h" + r["prompt_id"]) for r in categorised(tokenizer, CATS, 2, 3, seed=20)]
    run.mkdir()
    (run / "rollouts_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (run / "rollouts_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    save_critic(run / "model", tiny_causal_dir, tokenizer)
    cfg = qs.QuickstartConfig(categories=",".join(CATS), seed=0)
    (run / "metrics.json").write_text(json.dumps({"gamma": GAMMA, "config": cfg.__dict__}))

    calls = []

    def fake_train_and_report(cfg, train_records, heldout, val_records=(), sampling_seconds=0.0):
        calls.append((cfg, train_records, heldout))
        save_critic(f"{cfg.output_dir}/model", tiny_causal_dir, tokenizer, seed=1)  # not the run's critic
        report = {"gamma": float(cfg.gamma), "seconds": {"training": 1}, "config": cfg.__dict__}
        (tmp_path / "folds" / cfg.output_dir.split("/")[-1] / "metrics.json").write_text(json.dumps(report))
        return report

    monkeypatch.setattr(qs, "train_and_report", fake_train_and_report)
    argv = ["--run_dir", str(run), "--folds_dir", str(tmp_path / "folds"), "--output_dir", str(tmp_path / "out")]
    result = loco.main(argv)

    assert [c.output_dir.split("/")[-1] for c, _, _ in calls] == CATS
    for (cfg_f, train_f, held_f), cat in zip(calls, CATS):
        assert cfg_f.categories == ",".join(c for c in CATS if c != cat) and float(cfg_f.gamma) == GAMMA
        assert {r["category"] for r in train_f} == set(CATS) - {cat} and len(train_f) == 12
        assert {r["category"] for r in held_f} == {cat} and len(held_f) == 2 * 3
    truth = per_prompt_truth(finished_lengths_by_prompt(held), GAMMA)
    pooled = result["pooled"]
    assert (
        pooled["left out"]["prompts"]
        == len(truth)
        == sum(e["left out"]["prompts"] for e in result["per_category"].values())
    )
    # the folds' critics (another initialisation) against the run's: each arm predicts with its own
    run_pred = predictions(run / "model", held, GAMMA)
    fold_pred = predictions(tmp_path / "folds" / CATS[0] / "model", held, GAMMA)
    assert run_pred != fold_pred
    for c in CATS:
        ids = result["folds"][c]["truth"]  # batched with other prompts here: equal up to float noise
        assert result["folds"][c]["random split"] == pytest.approx({i: run_pred[i] for i in ids}, rel=1e-5)
        assert result["folds"][c]["left out"] == pytest.approx({i: fold_pred[i] for i in ids}, rel=1e-5)
    assert pooled["left out"] != pooled["random split"]
    # each fold's constant: the return-consistent mean of the other categories' finished training lengths
    for c in CATS:
        # answer tokens: a finished rollout's num_tokens counts its EOS
        others = [r["num_tokens"] - 1 for r in train if r["category"] != c and r["finish_reason"] == "stop"]
        expected = return_consistent_length(others, GAMMA)
        assert all(v == pytest.approx(expected) for v in result["folds"][c]["constant"].values())
    consts = {c: next(iter(result["folds"][c]["constant"].values())) for c in CATS}
    by_hand = np.mean([abs(consts[pid[1:].split("-")[0]] - t) / max(t, 1.0) for pid, t in truth.items()])
    assert pooled["constant"]["mre"] == pytest.approx(by_hand)
    assert "**pooled**" in (tmp_path / "out" / f"{loco.NAME}.md").read_text()

    loco.main(argv + ["--categories", "story"])  # the fold is there with the same settings: not trained again
    assert len(calls) == 3
    with pytest.raises(SystemExit, match="unknown categories"):
        loco.main(argv + ["--categories", "code"])
    with_val = qs.QuickstartConfig(categories=",".join(CATS), seed=0, validation_prompts_per_category=1)
    (run / "metrics.json").write_text(json.dumps({"gamma": GAMMA, "config": with_val.__dict__}))
    with pytest.raises(SystemExit, match="validation split"):
        loco.main(argv)
    with pytest.raises(SystemExit, match="not a finished quickstart run"):
        loco.main(["--run_dir", str(tmp_path / "nothing")])
