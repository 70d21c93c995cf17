"""lenvm_rl.metrics: prediction errors by hand."""

import pytest

from lenvm_rl.metrics import prediction_errors


def test_prediction_errors_by_hand_with_the_longest_quartile():
    truth = {"a": 10.0, "b": 20.0, "c": 40.0, "d": 200.0}
    predicted = {"a": 12.0, "b": 20.0, "c": 30.0, "d": 100.0}  # the long one under-predicted by half
    m = prediction_errors(predicted, truth)
    assert m["mre"] == pytest.approx((0.2 + 0.0 + 0.25 + 0.5) / 4)
    assert m["mae"] == pytest.approx((2 + 0 + 10 + 100) / 4)
    # 75th percentile of (10, 20, 40, 200) is 80: only "d" is in the longest quartile.
    assert m["mre_longest_quartile"] == pytest.approx(0.5) and m["mae_longest_quartile"] == pytest.approx(100.0)
    assert m["kendall_tau"] == pytest.approx(1.0) and m["within_50"] == 0.75 and m["prompts"] == 4


def test_truth_noise_floor_is_zero_without_spread_and_matches_a_perfect_predictor_in_simulation():
    import numpy as np

    from lenvm_rl.metrics import truth_noise_floor

    assert truth_noise_floor({"a": [7, 7, 7]}, {"a": 7.0}) == 0.0
    # by hand: n = 2, s = 10 / sqrt(2), c4(2) = sqrt(2 / pi) -> floor = s / sqrt(2) / truth = 5 / 15
    assert truth_noise_floor({"a": [10, 20]}, {"a": 15.0}) == pytest.approx(5 / 15)
    # a predictor that knows mu = 100 exactly, scored against the mean of 4 samples of sd 30
    rng = np.random.default_rng(0)
    samples = {str(i): rng.normal(100, 30, size=4) for i in range(4000)}
    truth = {k: float(v.mean()) for k, v in samples.items()}
    perfect = prediction_errors({k: 100.0 for k in truth}, truth)["mre"]
    assert truth_noise_floor(samples, truth) == pytest.approx(perfect, rel=0.05)
    assert truth_noise_floor(samples, truth) > 0.1  # sd 30 / 2 / 100 * 0.8: the check is not vacuous
    with pytest.raises(ValueError, match="needs >= 2"):
        truth_noise_floor({"a": [5]}, {"a": 5.0})


def test_finished_lengths_by_prompt_keeps_finished_completions_of_prompts_with_enough_samples():
    from lenvm_rl.metrics import finished_lengths_by_prompt

    def rec(pid, n, reason="stop"):
        return {"prompt_id": pid, "num_tokens": n, "finish_reason": reason}

    records = [rec("a", 10), rec("a", 30), rec("a", 256, "length"), rec("b", 5), rec("b", 256, "length"), rec("c", 7)]
    # a: the cut completion is a lower bound, not a length; b, c: one finished sample is not a ground truth.
    # Lengths are answer tokens: a finished rollout's num_tokens counts its EOS (docs/method.md).
    assert finished_lengths_by_prompt(records) == {"a": [9, 29]}
    assert finished_lengths_by_prompt(records, min_samples=1) == {"a": [9, 29], "b": [4], "c": [6]}
