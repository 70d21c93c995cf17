"""evals/benchmarks/trunk_training.py: the tiny mode runs every kind of arm end to end; no timing assertions."""

from __future__ import annotations

import json
import math

import pytest

from evals.benchmarks import trunk_training


@pytest.mark.slow  # over ~5 s on 2 cores
def test_tiny_benchmark_reports_every_arm_against_today(tmp_path):
    out = tmp_path / "trunk.json"
    result = trunk_training.main(["--tiny", "--quiet", "--output", str(out)])
    saved = json.loads(out.read_text())
    s = saved["summary"]
    assert list(s) == trunk_training.TINY_ARMS == saved["config"]["arms"]
    for arm, a in s.items():
        assert a["end_to_end_tokens_per_s"] > 0 and math.isfinite(a["end_to_end_vs_today"]), arm
        assert a["final_loss"] is not None and math.isfinite(a["final_loss"]), arm
        assert (a["trunk_s"] > 0) == (arm.startswith("L") and arm != "L0"), arm  # L0: no trunk to compute
    assert s["today"]["end_to_end_vs_today"] == 1.0
    # L0 is full fine-tuning; L2 (all of tiny-llama's layers) trains the head alone: H * H + H + H + 1 parameters
    assert s["L0"]["trainable_params"] == s["today"]["trainable_params"] == s["packed"]["trainable_params"]
    assert s["L2"]["trainable_params"] == 64 * 64 + 64 + 64 + 1
    assert saved["machine"]["cpu"] and "| L1+packed |" in result["markdown"]


def test_arm_names_map_to_config_fields():
    assert trunk_training.arm_settings("today") == {"trunk_layers": None, "padding_free": False}
    assert trunk_training.arm_settings("L24+packed") == {"trunk_layers": 24, "padding_free": True}
    assert trunk_training.arm_settings("packed") == {"trunk_layers": None, "padding_free": True}
    with pytest.raises(SystemExit, match="unknown arms"):
        trunk_training.TrunkBenchOptions(arms=["L-1"])
