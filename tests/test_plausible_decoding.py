"""Plausible candidates (the critic's sampling, a min-p floor), the budget in the prompt and the per-step trust region
of length-guided decoding, on tiny random models (issue 32)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from lenvm_rl.candidates import (
    DEFAULT_MIN_P,
    FALLBACK_TEMPERATURE,
    FALLBACK_TOP_P,
    candidate_settings,
    rollout_sampling,
)
from lenvm_rl.critic import LengthCritic
from lenvm_rl.decoding import ConstantScorer, LengthGuidedLogitsProcessor, generate_with_length
from lenvm_rl.length_prompt import TEMPLATES, length_prompt_text, with_length_prompt
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.prompts import encode_prompt
from lenvm_rl.trust_region import candidate_logp, kl_divergence, trust_region_logp


@pytest.fixture
def setup(tiny_causal_dir, tiny_backbone, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.97).eval(), tokenizer)
    return model, critic


PROMPTS = ["Hello there.", [{"role": "user", "content": "Write a long story about a cat."}]]


class FavourTheUnlikely:
    """A scorer whose values rise down the candidate list (candidates come most probable first), so a strong tilt
    (beta > 0 favours high V) picks the least probable candidate it is allowed."""

    def start(self, prompt_ids, mask, **_):
        return torch.zeros(prompt_ids.shape[0])

    def step(self, previous, candidates):
        k = candidates.shape[1]
        values = -1.0 + torch.arange(k, dtype=torch.float32) / k
        return None, values.expand(candidates.shape[0], k).clone()


def run_steps(model, critic, prompts, steps: int, **kw):
    """Sampled steps of a processor over the real tiny generator's logits: (processor, [(scores, chosen ids)])."""
    torch.manual_seed(0)
    proc = LengthGuidedLogitsProcessor(critic, **kw)
    tok = critic.tokenizer
    rows = [encode_prompt(tok, p) for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    seen = []
    with torch.no_grad():
        for _ in range(steps):
            mask = (ids != tok.pad_token_id).long()
            scores = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
            out = proc(ids, scores)
            chosen = torch.multinomial(torch.softmax(out.float(), -1), 1)
            seen.append((scores, chosen[:, 0]))
            ids = torch.cat([ids, chosen], 1)
    return proc, seen


# ---------------------------------------------------------------------------------------------- the min-p floor
def test_a_rule_never_chooses_a_candidate_below_the_min_p_floor(setup):
    model, critic = setup
    kw = dict(mode="tilt", beta=60.0, temperature=0.7, top_k=15, scorer=FavourTheUnlikely())
    below = []
    for min_p in (0.0, 0.85):
        _, seen = run_steps(model, critic, PROMPTS, 12, min_p=min_p, **kw)
        n = 0
        for scores, chosen in seen:
            p = torch.softmax(scores / 0.7, -1)
            floor = min_p * p.max(-1).values
            n += int((p.gather(1, chosen[:, None])[:, 0] < 0.85 * p.max(-1).values).sum())
            if min_p:
                assert (p.gather(1, chosen[:, None])[:, 0] >= floor * (1 - 1e-5)).all()
        below.append(n)
    # without the floor the tilt walks to the least probable candidates (below 0.85 x the top one); with it, never
    assert below[0] > 0 and below[1] == 0


def test_eos_forced_by_a_rule_is_the_only_exception_to_the_floor():
    critic = SimpleNamespace(gamma=0.9, tokenizer=SimpleNamespace(eos_token_id=0, pad_token_id=1))
    proc = LengthGuidedLogitsProcessor(critic, "at_most", 2, top_k=5, min_p=0.5, scorer=ConstantScorer())
    scores = torch.zeros(1, 8)
    scores[0, 0] = -30.0  # EOS far below the floor
    ids = torch.tensor([[1, 3, 4, 5, 6]])
    proc.prompt_length = 3  # two tokens generated: at_most's target, where EOS is forced
    out = proc(ids, scores)
    assert torch.isfinite(out[0]).tolist() == [True] + [False] * 7


# ---------------------------------------------------------------------------------------------- candidate settings
def test_candidate_settings_follow_the_critics_rollouts(tmp_path, tiny_backbone, tokenizer):
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.97).eval(), tokenizer)
    fallback = candidate_settings(critic)
    assert (fallback.temperature, fallback.top_p, fallback.min_p) == (FALLBACK_TEMPERATURE, FALLBACK_TOP_P, 0.05)
    assert "records none" in fallback.source and DEFAULT_MIN_P == 0.05
    # the quickstart's layout: rollouts_train.jsonl beside the model dir
    (tmp_path / "model").mkdir()
    record = {"sampling": {"temperature": 0.6, "top_p": 0.8, "max_new_tokens": 64, "seed": 0}}
    (tmp_path / "rollouts_train.jsonl").write_text(json.dumps(record) + "\n")
    critic.path = str(tmp_path / "model")
    s = candidate_settings(critic)
    assert (s.temperature, s.top_p) == (0.6, 0.8) and "rollouts_train.jsonl" in s.describe()
    # lenvm_config.json's record wins, and survives a save / load
    critic.model.rollout_sampling = {"temperature": 0.5, "top_p": 0.95}
    critic.model.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "lenvm_config.json").read_text())["rollout_sampling"]["temperature"] == 0.5
    loaded = LengthValueModel.from_pretrained(tmp_path / "model")
    assert loaded.rollout_sampling == {"temperature": 0.5, "top_p": 0.95}
    s = candidate_settings(critic)
    assert (s.temperature, s.top_p) == (0.5, 0.95) and "lenvm_config.json" in s.source
    # explicit settings win
    s = candidate_settings(critic, temperature=1.0, top_p=1.0, min_p=0)
    assert (s.temperature, s.top_p, s.min_p, s.source) == (1.0, 1.0, 0.0, "as given")


def test_rollout_sampling_of_records():
    rec = lambda t, p: {"sampling": {"temperature": t, "top_p": p, "max_new_tokens": 9, "seed": 0}}  # noqa: E731
    assert rollout_sampling([rec(0.7, 0.9), rec(0.7, 0.9)]) == {"temperature": 0.7, "top_p": 0.9}
    assert rollout_sampling([rec(0.7, 0.9), rec(1.0, 0.9)]) is None  # mixed: no one setting describes them
    assert rollout_sampling([{"completion": "x"}]) is None


# ---------------------------------------------------------------------------------------------- the trust region
def test_trust_region_holds_the_per_step_kl_on_a_tiny_generator(setup):
    model, critic = setup
    kw = dict(mode="equal", target_tokens=6, temperature=0.7, top_k=15, value_tolerance=0.1)
    free, _ = run_steps(model, critic, PROMPTS, 6, **kw, trust_region=1e9)
    free_kl = free.step_kl()
    assert free_kl.max() > 0.5  # near the target the unconstrained rule moves far from the generator's candidates
    for eps in (0.02, 0.2):
        proc, _ = run_steps(model, critic, PROMPTS, 6, **kw, trust_region=eps)
        kl = proc.step_kl()
        assert kl.shape == (len(PROMPTS), 6)
        assert (kl <= eps + 1e-6).all()
        assert (kl > 0.5 * eps).any()  # it binds: the rule is used as far as the budget allows


def test_trust_region_reduces_to_the_unconstrained_rule_as_epsilon_grows():
    torch.manual_seed(0)
    logits = torch.randn(3, 12) * 2
    keep = torch.ones(3, 12, dtype=torch.bool)
    keep[0, 8:] = False
    p = candidate_logp(torch.log_softmax(logits, -1), keep)
    cost = torch.rand(3, 12)
    for kappa in (torch.full((3,), 6.0), torch.full((3,), math.inf)):
        rule = torch.where(keep, p - (kappa[:, None] * cost if torch.isfinite(kappa).all() else 0), -math.inf)
        if not torch.isfinite(kappa).all():  # the infinite limit: the cheapest candidate alone
            best = cost.masked_fill(~keep, math.inf).argmin(-1, keepdim=True)
            rule = torch.full_like(p, -math.inf).scatter(1, best, 0.0)
        kl_rule = kl_divergence(torch.log_softmax(rule, -1), p)
        gaps = []
        for eps in (0.01, 0.05, 0.2, 1.0, 5.0):
            out, kl = trust_region_logp(p, rule, cost, kappa, eps)
            assert (kl <= eps + 1e-6).all()
            q = torch.log_softmax(out.double(), -1)
            assert torch.allclose(kl, kl_divergence(q, p.double()).float(), atol=1e-6)
            gaps.append((torch.softmax(out, -1) - torch.softmax(rule, -1)).abs().sum(-1))
        for a, b in zip(gaps, gaps[1:]):  # closer to the rule as the budget grows
            assert (b <= a + 1e-6).all()
        big = float(kl_rule.max()) + 1.0
        out, _ = trust_region_logp(p, rule, cost, kappa, big)
        assert torch.equal(out, rule)  # within the budget: the rule exactly


def test_rule_family_at_its_strength_is_the_rule():
    critic = SimpleNamespace(gamma=0.9, tokenizer=SimpleNamespace(eos_token_id=0, pad_token_id=1))
    torch.manual_seed(1)
    logp = torch.log_softmax(torch.randn(2, 6), -1)
    keep = torch.ones(2, 6, dtype=torch.bool)
    values = -torch.rand(2, 6)
    for mode, target, beta in (("equal", 10, None), ("at_least", 10, None), ("tilt", None, 3.0), ("at_most", 10, None)):
        proc = LengthGuidedLogitsProcessor(
            critic, mode, target, beta, top_k=6, scorer=ConstantScorer(), value_tolerance=0.4
        )
        rule = proc.rule_logp(None, logp, keep, values, generated=3)
        cost, kappa = proc.rule_family(values, keep, 3)
        p = candidate_logp(logp, keep)
        if torch.isfinite(kappa).all():
            family = torch.log_softmax(p - kappa[:, None] * cost, -1)
        else:  # at_most's restriction to what fits
            family = torch.where(cost == cost.min(-1, keepdim=True).values, p, torch.full_like(p, -math.inf))
        assert torch.allclose(torch.softmax(rule, -1), torch.softmax(family, -1), atol=1e-5), mode


def test_trust_region_end_to_end_matches_the_rule_at_a_large_budget(setup):
    model, critic = setup
    kw = dict(mode="equal", target_tokens=6, max_new_tokens=14, seed=0, temperature=0.7)
    free = generate_with_length(model, critic, PROMPTS, **kw)
    large = generate_with_length(model, critic, PROMPTS, trust_region=1e9, **kw)
    tight = generate_with_length(model, critic, PROMPTS, trust_region=0.01, **kw)
    assert [r["token_ids"] for r in large] == [r["token_ids"] for r in free]
    assert all(6 <= r["num_tokens"] <= 6 + 4 for r in tight)  # the hard rules stand outside the trust region


# ---------------------------------------------------------------------------------------------- the budget prompt
def test_the_budget_template_lands_in_the_prompt_text(setup, tokenizer, monkeypatch):
    import lenvm_rl.data

    assert length_prompt_text("default", "equal", 32) == "Answer in about 32 tokens (roughly 24 words)."
    assert length_prompt_text("none", "equal", 32) is None and length_prompt_text(None, "tilt", None) is None
    assert length_prompt_text("Keep it to {target} tokens.", "at_most", 16) == "Keep it to 16 tokens."
    assert with_length_prompt("Describe the sea.", "X.") == "Describe the sea. X."
    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert with_length_prompt(msgs, "X.")[-1]["content"] == "Hi X." and msgs[-1]["content"] == "Hi"
    model, critic = setup
    seen = []
    real = lenvm_rl.data.encode_prompt
    monkeypatch.setattr(lenvm_rl.data, "encode_prompt", lambda tok, p, chat=True: seen.append(p) or real(tok, p, chat))
    for mode in TEMPLATES:
        seen.clear()
        out = generate_with_length(
            model, critic, PROMPTS, mode=mode, target_tokens=4, max_new_tokens=8, seed=0, length_prompt="default"
        )
        want = TEMPLATES[mode].format(target=4, words=3)
        assert all(r["length_prompt"] == want for r in out)
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in seen]
        assert len(texts) == len(PROMPTS) and all(t.endswith(" " + want) for t in texts)
        ids = real(tokenizer, seen[0], critic.use_chat_template)
        assert want in tokenizer.decode(ids)


def test_prompt_only_is_plain_sampling_with_the_budget(setup):
    model, critic = setup
    kw = dict(mode="at_most", target_tokens=3, max_new_tokens=10, seed=0, length_prompt="default")
    plain = generate_with_length(model, critic, PROMPTS * 3, guide=False, **kw)
    assert all(r["end"] in ("natural", "cap") and not r["rule_forced"] for r in plain)
    assert any(r["num_tokens"] > 3 for r in plain)  # no stop rule: the target is only asked for
    assert all(r["length_prompt"].startswith("Answer in at most 3 tokens") for r in plain)
    guided = generate_with_length(model, critic, PROMPTS * 3, **kw)
    assert all(r["num_tokens"] <= 3 for r in guided)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_p=-0.1), r"min_p must be in \[0, 1\)"),
        (dict(min_p=1.0), r"min_p must be in \[0, 1\)"),
        (dict(min_p=float("nan")), r"min_p must be in \[0, 1\)"),
        (dict(trust_region=0.0), "trust_region"),
        (dict(trust_region=-1.0), "trust_region"),
        (dict(trust_region=float("inf")), "trust_region"),
        (dict(length_prompt="Be brief."), r"no \{target\} placeholder"),
        (dict(length_prompt="About {n} tokens."), r"no \{target\} placeholder"),
        (dict(length_prompt="{target} tokens, {style}."), "unknown placeholders"),
        (dict(length_prompt="{target} tokens {"), "not a valid template"),
        (dict(mode="tilt", target_tokens=None, beta=1.0, length_prompt="default"), "cannot take a budget prompt"),
        (dict(mode="tilt", target_tokens=None, beta=1.0, length_prompt="default", guide=False), "cannot take"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_input_is_refused_before_any_generation(setup, kwargs, match):
    model, critic = setup

    def no_generation(*a, **k):
        raise AssertionError("generate ran before the check")

    model.generate = no_generation
    args = {"mode": "equal", "target_tokens": 4, "max_new_tokens": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_with_length(model, critic, PROMPTS, **args)


def test_bad_input_of_the_processor():
    critic = SimpleNamespace(gamma=0.9, tokenizer=SimpleNamespace(eos_token_id=0, pad_token_id=1))
    with pytest.raises(ValueError, match="min_p"):
        LengthGuidedLogitsProcessor(critic, "equal", 4, min_p=1.2, scorer=ConstantScorer())
    with pytest.raises(ValueError, match="trust_region"):
        LengthGuidedLogitsProcessor(critic, "equal", 4, trust_region=0, scorer=ConstantScorer())
