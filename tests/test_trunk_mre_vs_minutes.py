"""evals/experiments/trunk_mre_vs_minutes.py in --tiny mode on a tiny random model: every run recorded, resumable,
refuses held-out rollouts with too few samples per prompt and a results file made from other inputs."""

from __future__ import annotations

import json

import pytest

from evals.experiments import trunk_mre_vs_minutes as exp
from tests.conftest import make_records, write_jsonl


@pytest.fixture
def rollouts(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", make_records(tokenizer, n=24, seed=0, truncated_every=7))
    heldout = make_records(tokenizer, n=24, seed=1)
    for r in heldout:
        r["prompt_id"] = "h" + r["prompt_id"]
    return train, write_jsonl(tmp_path / "heldout.jsonl", heldout)


@pytest.mark.slow  # over ~5 s on 2 cores
def test_tiny_grid_is_recorded_resumed_and_plotted(rollouts, tiny_causal_dir, tmp_path, monkeypatch):
    train, heldout = rollouts
    argv = ["--tiny", "--train", str(train), "--heldout", str(heldout), "--model", str(tiny_causal_dir)]
    argv += ["--output_dir", str(tmp_path / "out")]
    result = exp.main(argv)
    runs = result["runs"]
    assert len(runs) == 3 * 1 * 2 * 2  # layers 0,1,2 x 1 epoch x sizes 0.5,1 x seeds 0,1
    for key, r in runs.items():
        assert r["minutes"] > 0 and 0 <= r["errors"]["mre"] and r["errors"]["prompts"] == 6, key
        assert (r["trunk_seconds"] > 0) == (r["layers"] > 0), key
    half = [r for r in runs.values() if r["size"] == 0.5]
    assert all(r["examples"] < runs["L0_e1_n1_s0"]["examples"] for r in half)
    assert set(result["summary"]) == {f"L{n}_e1_n{s}" for n in (0, 1, 2) for s in ("0.5", "1")}
    assert (tmp_path / "out" / "mre_vs_minutes.png").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(runs))

    # resumed: nothing is trained again
    def no_training(*a, **k):
        raise AssertionError("retrained a run that was recorded")

    monkeypatch.setattr(exp, "train_one", no_training)
    assert exp.main(argv)["runs"].keys() == runs.keys()
    # a learning-rate axis adds its own options beside the quickstart-rate ones, and reaches the trainer
    seen_lr = []

    def fake_training(model_path, records, layers, epochs, seed, gamma, a, lr=None):
        seen_lr.append(lr)
        raise KeyboardInterrupt  # stop after the first new run: the option it would be filed under is known

    monkeypatch.setattr(exp, "train_one", fake_training)
    with pytest.raises(KeyboardInterrupt):
        exp.main([*argv, "--learning_rates", "0.003"])
    assert seen_lr == [0.003]
    # other inputs into the same results file: refused
    with pytest.raises(SystemExit, match="other settings"):
        exp.main([*argv, "--no-padding_free"])


def test_heldout_needs_enough_samples_per_prompt(rollouts, tmp_path):
    train, heldout = rollouts
    with pytest.raises(ValueError, match="fewer than 16 samples"):
        exp.main(["--train", str(train), "--heldout", str(heldout), "--output_dir", str(tmp_path / "o")])
