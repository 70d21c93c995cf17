"""evals/benchmarks/engine_distribution.py: the check a quantized engine needs runs end to end in tiny mode, and its
record is what lenvm_rl.ct2_engine.check_quantized reads."""

import json
import math

import pytest

from evals.benchmarks import engine_distribution


def test_paired_mean_gap_by_hand():
    ref = [{"prompt_id": "a", "num_tokens": n} for n in (10, 30)] + [{"prompt_id": "b", "num_tokens": 100}]
    eng = [
        {"prompt_id": "a", "num_tokens": 22},
        {"prompt_id": "b", "num_tokens": 90},
        {"prompt_id": "c", "num_tokens": 5},
    ]
    # a: (22 - 20) / 20 = +0.10; b: (90 - 100) / 100 = -0.10; c is not in the reference
    assert math.isclose(engine_distribution.paired_mean_gap(ref, eng), 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="share no prompt"):
        engine_distribution.paired_mean_gap(ref, [{"prompt_id": "z", "num_tokens": 1}])


@pytest.mark.slow  # a benchmark script, tiny
def test_tiny_check_writes_the_record_rollouts_read(tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    monkeypatch.setenv("LENVM_RL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "check.json"
    result = engine_distribution.main(["--tiny", "--quantization", "int8", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["quantization"] == "int8" and saved["completions_per_arm"] == 8
    assert 0 <= saved["ks_p"] <= 1 and math.isfinite(saved["mean_rel_gap"])
    assert result["passed"] is False  # 8 completions are far from the 400 the rule needs
    from lenvm_rl import ct2_engine

    with pytest.raises(ValueError, match="completions per arm"):
        ct2_engine.check_quantized(saved["model"], "int8", str(out))
