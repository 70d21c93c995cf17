"""The untrained-head control critic (evals/experiments/untrained_critic.py) loads as a critic, seeded."""

import json

import pytest
import torch
from safetensors.torch import load_file


@pytest.mark.slow  # over 2 s on the 2 cores
def test_untrained_critic_saves_a_loadable_seeded_head(tiny_causal_dir, tmp_path):
    from evals.experiments.untrained_critic import main
    from lenvm_rl.critic import LengthCritic

    gamma = 0.9821718891880378
    a = main(
        ["--output_dir", str(tmp_path / "a"), "--gamma", str(gamma), "--seed", "0", "--backbone", str(tiny_causal_dir)]
    )
    b = main(
        ["--output_dir", str(tmp_path / "b"), "--gamma", str(gamma), "--seed", "0", "--backbone", str(tiny_causal_dir)]
    )
    c = main(
        ["--output_dir", str(tmp_path / "c"), "--gamma", str(gamma), "--seed", "1", "--backbone", str(tiny_causal_dir)]
    )
    heads = [load_file(str(d / "value_head.safetensors")) for d in (a, b, c)]
    assert heads[0].keys() == heads[2].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # the seed sets the head
    assert any(not torch.equal(heads[0][k], heads[2][k]) for k in heads[0])  # another seed, another head
    assert json.loads((a / "lenvm_config.json").read_text())["gamma"] == gamma
    critic = LengthCritic.from_pretrained(str(a), device="cpu")
    predicted = critic.predict_length(["Write a haiku about rain."])
    assert len(predicted) == 1 and float(predicted[0]) >= 0


@pytest.mark.slow  # over ~5 s on 2 cores
def test_untrained_heads_run_as_an_at_least_family(tiny_causal_dir, tmp_path, lifebench_file):
    """The At-Least control of the results: untrained heads as critics of lifebench_critics, one family."""
    from evals.experiments import lifebench_critics as lc
    from evals.experiments.untrained_critic import save_untrained_critic

    heads = {
        f"untrained_s{s}": save_untrained_critic(tmp_path / f"u{s}" / "model", 0.98, s, str(tiny_causal_dir))
        for s in (0, 1)
    }
    result = lc.main(
        ["--tiny", "--generator", str(tiny_causal_dir), "--data", str(lifebench_file), "--modes", "at_least"]
        + [
            "--arms",
            "plain,rules_only,lenvm",
            "--runs_dir",
            str(tmp_path / "runs"),
            "--output_dir",
            str(tmp_path / "out"),
        ]
        + ["--critics", ",".join(f"{k}={v}" for k, v in heads.items())]
    )
    assert {(r["critic"], r["mode"]) for r in result["rows"]} == {(k, "at_least") for k in heads}
    assert [e["family"] for e in result["families"]] == ["untrained"] * len(result["families"])
    assert all(r["heldout_mre"] is None for r in result["rows"])  # no quickstart metrics beside an untrained head
