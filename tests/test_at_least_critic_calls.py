"""at_least past its target samples from the generator's own candidates: it must not run the critic there."""

from types import SimpleNamespace

import pytest
import torch

from lenvm_rl.decoding import LengthGuidedLogitsProcessor

EOS, PAD, VOCAB, GAMMA = 0, 1, 12, 0.9


class CountingScorer:
    """A critic stand-in that predicts 5 more tokens after every candidate and counts its forwards."""

    def __init__(self):
        self.steps = 0

    def start(self, prompt_ids, mask, **vision):
        return torch.zeros(prompt_ids.shape[0])

    def step(self, previous, candidates):
        self.steps += 1
        return None, torch.full(candidates.shape, -(1 - GAMMA**5), dtype=torch.float64)


@pytest.mark.parametrize(("rule", "critic_steps"), [("soft", 3), ("extreme", 8)])
def test_at_least_runs_the_critic_only_where_it_uses_it(rule, critic_steps):
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    scorer = CountingScorer()
    proc = LengthGuidedLogitsProcessor(critic, "at_least", 3, top_k=4, rule=rule, scorer=scorer)
    ids = torch.tensor([[PAD, 5, 6]])
    logits = torch.zeros(1, VOCAB)
    logits[0, 2:] = 1.0  # EOS (id 0) is never likely enough: the row runs on
    for _ in range(8):
        ids = torch.cat([ids, proc(ids, logits.clone()).argmax(-1, keepdim=True)], 1)
    # soft: the critic scores the 3 steps before the target only; extreme past the target picks the
    # shortest-predicted candidate, so it still needs every step's values.
    assert scorer.steps == critic_steps
    assert proc.eos_natural().shape == (1, 8)
