import math

import pytest
import torch

from lenvm_rl import returns as R


def test_targets_follow_bellman_and_end_at_zero():
    gamma, length = 0.9, 7
    g = R.completion_targets(length, gamma).double()
    assert g.shape == (length + 1,)
    assert g[-1] == 0  # EOS target
    assert g[0].item() == pytest.approx(-(1 - gamma**length))
    r = R.step_reward(gamma)
    for t in range(length):
        assert g[t].item() == pytest.approx(r + gamma * g[t + 1].item(), abs=1e-6)
    assert torch.all(g <= 0) and torch.all(g > -1)


def test_inversion_round_trips():
    n = torch.arange(0, 2000, 37)
    v = R.remaining_to_value(n, 0.997)
    assert torch.allclose(R.value_to_remaining(v, 0.997), n.double(), atol=1e-6)
    assert R.value_to_remaining(torch.tensor(0.0), 0.99) == 0


def test_gamma_rule_puts_99_percent_mass_at_l99():
    lengths = list(range(1, 1001))
    gamma = R.gamma_from_lengths(lengths)
    l99 = torch.quantile(torch.tensor(lengths, dtype=torch.float64), 0.99).item()
    assert 1 - gamma**l99 == pytest.approx(0.99)
    # paper: L99 about 1.5k tokens gives about 0.997
    assert R.gamma_from_lengths([1535] * 10) == pytest.approx(0.997, abs=1e-4)


@pytest.mark.parametrize("bad", [0, 1, -0.5, 1.5, float("nan"), "x"])
def test_bad_gamma_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="gamma"):
        R.check_gamma(bad)


def test_auto_gamma_needs_lengths():
    with pytest.raises(ValueError, match="completed rollouts"):
        R.gamma_from_lengths([])


def test_td_residuals_vanish_on_exact_values_and_gae_telescopes():
    gamma, length = 0.95, 12
    g = R.remaining_to_value(torch.arange(length, -1, -1), gamma)  # float64 targets
    assert torch.allclose(R.td_residuals(g, gamma)[:-1], torch.zeros(length, dtype=torch.float64), atol=1e-12)
    values = g + 0.05 * torch.randn(length + 1, dtype=torch.float64)
    values[-1] = 0.0  # EOS is terminal
    deltas = R.td_residuals(values[:-1], gamma, next_values=values[1:])
    adv = R.gae(deltas, gamma, lam=1.0)
    assert torch.allclose(adv, g[:-1] - values[:-1], atol=1e-12)  # lambda = 1 gives G_t - V(s_t)
    assert torch.allclose(R.gae(deltas, gamma, lam=0.0), deltas)


def test_return_consistent_length_is_exact_for_constant_lengths_and_below_the_mean_otherwise():
    assert R.return_consistent_length([50, 50, 50], 0.99) == pytest.approx(50)
    spread = [10, 300]
    assert R.return_consistent_length(spread, 0.99) < sum(spread) / 2  # Jensen
    v = R.remaining_to_value(torch.tensor(spread), 0.99).mean()
    assert R.return_consistent_length(spread, 0.99) == pytest.approx(math.log1p(v.item()) / math.log(0.99))
