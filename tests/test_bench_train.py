"""evals/benchmarks/train_throughput.py: the tiny mode runs end to end (both arms, fresh subprocesses); no timing
assertions."""

from __future__ import annotations

import json
import math

import pytest

from evals.benchmarks import train_throughput
from lenvm_rl.data import IGNORE_INDEX


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_benchmark_writes_both_arms(tmp_path):
    out = tmp_path / "train_throughput.json"
    result = train_throughput.main(["--tiny", "--quiet", "--output", str(out)])

    saved = json.loads(out.read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    arms = saved["summary"]["arms"]
    assert set(arms) == {"lenvm", "sft"}
    for arm in arms.values():
        assert arm["tokens_per_s"] > 0
        assert arm["peak_total_mib"] > 0
        assert arm["final_loss"] is not None and math.isfinite(arm["final_loss"])
    ratios = saved["summary"]["ratios"]
    for key in ("throughput_lenvm_over_sft", "peak_increase_lenvm_over_sft", "peak_total_lenvm_over_sft"):
        assert math.isfinite(ratios[key]) and ratios[key] > 0, key
    # Both arms trained on exactly the same token ids in the same order.
    assert saved["summary"]["identical_batches"] is True
    assert {r["arm"] for r in saved["runs"]} == {"lenvm", "sft"}
    assert all(r["measured_steps"] == 2 for r in saved["runs"])
    assert "LenVM / SFT" in saved["markdown"]


def test_labels_of_the_two_arms():
    seqs = train_throughput.synthetic_sequences(3, seq_len=10, prompt_len=4, vocab_size=50, eos_id=2, seed=0)
    assert all(c[-1] == 2 and 2 not in p + c[:-1] for p, c in seqs)
    lenvm = train_throughput.build_features("lenvm", seqs)
    sft = train_throughput.build_features("sft", seqs)
    for (p, c), a, b in zip(seqs, lenvm, sft):
        assert a["input_ids"] == b["input_ids"] == p + c
        # LenVM: remaining-token counts from the last prompt token (6) down to 0 at EOS.
        assert a["labels"] == [IGNORE_INDEX] * 3 + list(range(6, -1, -1))
        # SFT: the completion's own ids, -100 on the prompt.
        assert b["labels"] == [IGNORE_INDEX] * 4 + c


def test_arm_order_alternates():
    order = [arm for r in range(3) for arm in train_throughput.arm_order(["lenvm", "sft"], r)]
    assert order == ["lenvm", "sft", "sft", "lenvm", "lenvm", "sft"]


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_benchmark_compares_frozen_lower_layers_with_full_training(tmp_path):
    out = tmp_path / "frozen.json"
    result = train_throughput.main(["--tiny", "--quiet", "--arms", "lenvm", "lenvm_frozen", "--output", str(out)])
    s = result["summary"]
    assert set(s["arms"]) == {"lenvm", "lenvm_frozen"} and s["identical_batches"] is True
    frozen, full = s["arms"]["lenvm_frozen"], s["arms"]["lenvm"]
    assert frozen["n_params"] == full["n_params"] and frozen["n_trainable"] < full["n_trainable"] == full["n_params"]
    assert (
        math.isfinite(s["ratios"]["throughput_frozen_over_lenvm"]) and s["ratios"]["throughput_frozen_over_lenvm"] > 0
    )
    assert "frozen 1 / LenVM" in result["markdown"] and result["config"]["freeze_layers"] == 1
