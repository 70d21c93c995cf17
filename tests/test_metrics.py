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
