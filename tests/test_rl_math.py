"""Per-token length advantages (the RL side of DESIGN section 5) against hand computations."""

import pytest
import torch

from lenvm_rl import returns as R
from lenvm_rl.critic import LengthCritic, left_pad
from lenvm_rl.modeling import LengthValueModel

G = 0.9


def _setup():
    # row 0: 3 tokens, terminated (EOS last); row 1: 4 tokens, truncated; padded to T = 4
    values = torch.tensor([[-0.5, -0.4, -0.3, -0.2, -0.9], [-0.6, -0.5, -0.45, -0.3, -0.25]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    return values, mask, torch.tensor([True, False])


def test_residuals_by_hand():
    values, mask, term = _setup()
    d = R.length_residuals(values, mask, term, G)
    r = -(1 - G)
    expected = torch.tensor(
        [
            [r + G * -0.4 + 0.5, r + G * -0.3 + 0.4, r + 0.0 + 0.3, 0.0],  # EOS -> terminal 0
            [r + G * -0.5 + 0.6, r + G * -0.45 + 0.5, r + G * -0.3 + 0.45, r + G * -0.25 + 0.3],
        ],
        dtype=torch.float64,
    )  # truncated: bootstrap V(s_4)
    assert torch.allclose(d, expected)


def test_lambda_one_gives_return_minus_value_on_terminated_rows():
    values, mask, term = _setup()
    adv = R.length_credit(values, mask, term, G, lam=1.0)
    returns = R.remaining_to_value(torch.tensor([3, 2, 1]), G)  # G_j = -(1 - gamma ** (L - j)), L = 3
    assert torch.allclose(adv[0, :3], returns - values[0, :3])
    assert adv[0, 3] == 0
    # the truncated row bootstraps: A_0 = sum_k gamma^k r + gamma^4 V(s_4) - V(s_0)
    boot = sum(G**k * -(1 - G) for k in range(4)) + G**4 * -0.25 - (-0.6)
    assert adv[1, 0].item() == pytest.approx(boot)
    assert torch.allclose(R.length_credit(values, mask, term, G, lam=0.0), R.length_residuals(values, mask, term, G))


def test_critic_rl_api_on_left_padded_prompts(tiny_backbone, tokenizer):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=G).eval(), tokenizer)
    eos = tokenizer.eos_token_id
    prompt_ids, prompt_mask = left_pad([[5, 6, 7], [8, 9]], tokenizer.pad_token_id)
    completion_ids = torch.tensor([[11, 12, eos, eos], [13, 14, 15, 16]])
    completion_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    adv = critic.length_advantages(prompt_ids, prompt_mask, completion_ids, completion_mask)
    assert adv.shape == (2, 4) and adv[0, 3] == 0
    # by hand for the left-padded row 1: values of its unpadded sequence
    v1 = critic.values(torch.tensor([[8, 9, 13, 14, 15, 16]]))[0, 1:].double()
    expected = R.length_credit(v1[None], completion_mask[1:], torch.tensor([False]), G)
    assert torch.allclose(adv[1:], expected.float(), atol=1e-5)
    v0 = critic.values(torch.tensor([[5, 6, 7, 11, 12, eos]]))[0, 2:].double()
    returns = R.remaining_to_value(torch.tensor([3, 2, 1]), G)
    assert torch.allclose(adv[0, :3], (returns - v0[:3]).float(), atol=1e-5)  # terminated: EOS auto-detected
    # The removed `potential` mode's helpers are gone, and the low-level credit has its own name.
    assert not hasattr(critic, "shaping_rewards") and not hasattr(R, "potential_shaping")
    assert not hasattr(R, "length_advantages")


def test_length_term_normalisation_keeps_or_removes_the_mean():
    import torch

    from lenvm_rl.rl.trainer import normalize_length_term

    term = torch.tensor([[1.0, 2.0, 3.0, 99.0], [3.0, 5.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])

    def total(x):
        return x  # one process

    kept = normalize_length_term(term * mask, mask, total)
    vals = kept[mask.bool()]
    assert torch.allclose(vals / vals[0], torch.tensor([1.0, 2.0, 3.0, 3.0, 5.0]))  # a pure rescale
    assert vals.std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    centred = normalize_length_term(term * mask, mask, total, center=True)
    vals = centred[mask.bool()]
    assert vals.mean() == pytest.approx(0.0, abs=1e-6) and vals.std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    assert (centred[~mask.bool()] == 0).all()
