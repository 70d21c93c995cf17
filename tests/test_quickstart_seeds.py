"""evals/experiments/quickstart_seeds.py: the pairing (shared rollouts), the reuse and the table, with a fake run."""

import json

import pytest
from conftest import make_records, write_jsonl

from evals.experiments import quickstart_seeds


def test_pairs_each_seed_reuses_finished_runs_and_summarises(tmp_path, monkeypatch, tokenizer):
    import lenvm_rl.quickstart as qs

    calls, categories = [], []

    def fake_run(cfg):
        out = tmp_path / "runs" / f"{'default' if cfg.freeze_layers == 0 else 'freeze20_x2'}_s{cfg.seed}"
        assert cfg.output_dir == str(out)
        records = make_records(tokenizer, n=8, seed=cfg.seed, truncated_every=4)  # 2 of 8 cut at the cap
        if cfg.freeze_layers:  # the paired default's rollouts are there before the run starts
            for name in quickstart_seeds.ROLLOUTS:
                assert [json.loads(line) for line in (out / name).read_text().splitlines()] == records
        else:
            out.mkdir(parents=True, exist_ok=True)
            for name in quickstart_seeds.ROLLOUTS:
                write_jsonl(out / name, records)
        calls.append((cfg.freeze_layers, cfg.train_samples, cfg.seed))
        categories.append(cfg.categories)
        mre = 0.4 - 0.1 * bool(cfg.freeze_layers) + 0.01 * cfg.seed
        lenvm = {"mre": mre, "mae": 100 * mre, "kendall_tau": 0.7, "mre_longest_quartile": mre}
        metrics = {
            "length_prediction": {
                "LenVM": lenvm,
                "baseline: train mean length (60 tok)": {"mre": 1.2},
                "baseline: train mean (return-consistent) (40 tok)": {"mre": 0.7 + cfg.seed},
            },
            "online_eval": {"eval_value_mse": mre / 10},
            "truth_noise_floor_mre": 0.18,
            "seconds": {"total": 1},
            "config": {**cfg.__dict__},
        }
        (out / "metrics.json").write_text(json.dumps(metrics))

    monkeypatch.setattr(qs, "run_quickstart", fake_run)
    argv = ["--seeds", "0,1", "--runs_dir", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "out")]
    result = quickstart_seeds.main(argv)
    assert calls == [(0, 1, 0), (20, 2, 0), (0, 1, 1), (20, 2, 1)]
    assert set(categories) == {qs.QuickstartConfig().categories} == {result["categories"]}  # the quickstart's own
    assert json.loads((tmp_path / "out" / "quickstart_seeds.json").read_text())["machine"]  # the shared writer
    assert result["per_seed"]["default"]["MRE"] == pytest.approx([0.40, 0.41])
    assert result["mean"]["freeze20_x2"]["MRE"] == pytest.approx(0.305)
    assert result["sd"]["default"]["MRE"] == pytest.approx(0.01 / 2**0.5)
    assert result["freeze20_x2_minus_default"]["MAE"] == pytest.approx([-10.0, -10.0])
    assert result["per_seed"]["default"]["train-mean MRE"] == pytest.approx([0.7, 1.7])  # the control beside it
    assert result["per_seed"]["freeze20_x2"]["held-out cut"] == [0.25, 0.25]
    assert "train-mean MRE" not in result["freeze20_x2_minus_default"]  # context, not a paired comparison
    md = (tmp_path / "out" / "quickstart_seeds.md").read_text()
    assert "MRE -10.0 %, -10.0 % (better in 2/2)" in md and "Kendall tau 0.00, 0.00 (better in 0/2)" in md
    quickstart_seeds.main(argv)  # every run is there with the same settings: nothing runs again
    assert len(calls) == 4
    alone = quickstart_seeds.main([*argv, "--arms", "default"])  # one arm: its spread, no difference
    assert list(alone["per_seed"]) == ["default"] and "freeze20_x2_minus_default" not in alone and len(calls) == 4
    other = quickstart_seeds.main([*argv, "--arms", "default", "--categories", "one_word,story"])
    assert len(calls) == 6 and categories[4:] == ["one_word,story"] * 2  # other settings: trained again
    assert other["categories"] == "one_word,story"
    with pytest.raises(SystemExit, match="unknown arm"):
        quickstart_seeds.main([*argv, "--arms", "default,frozen"])
