"""evals/experiments/leave_one_category_out.py: each fold trains without exactly its category (with the run's
gamma) and is judged on that category's held-out prompts beside the run's critic; pooling, reuse and bad input.
The fold's training is faked (it is `train_and_report`, tested with the quickstart)."""

import json

import numpy as np
import pytest
from test_broad_categories import GAMMA, categorised, save_critic

from evals.experiments import leave_one_category_out as loco
from lenvm_rl.metrics import finished_lengths_by_prompt, per_prompt_truth

CATS = ["list", "story", "yes_no"]


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
        save_critic(f"{cfg.output_dir}/model", tiny_causal_dir, tokenizer)
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
    # the same tiny critic for the run and every fold: identical errors; the constant by hand
    assert pooled["left out"] == pooled["random split"]
    consts = {c: next(iter(result["folds"][c]["constant"].values())) for c in CATS}
    by_hand = np.mean([abs(consts[pid[1:].split("-")[0]] - t) / max(t, 1.0) for pid, t in truth.items()])
    assert pooled["constant"]["mre"] == pytest.approx(by_hand)
    assert "**pooled**" in (tmp_path / "out" / f"{loco.NAME}.md").read_text()

    loco.main(argv + ["--categories", "story"])  # the fold is there with the same settings: not trained again
    assert len(calls) == 3
    with pytest.raises(SystemExit, match="unknown categories"):
        loco.main(argv + ["--categories", "code"])
    with pytest.raises(SystemExit, match="not a finished quickstart run"):
        loco.main(["--run_dir", str(tmp_path / "nothing")])
