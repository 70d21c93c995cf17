"""Length-guided decoding: tree scoring against naive scoring, an oracle critic, and the hard guarantees."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaModel

from lenvm_rl.critic import LengthCritic, TokenizerMismatchError, left_pad
from lenvm_rl.decoding import ConstantScorer, LengthGuidedLogitsProcessor, completion_record, generate_with_length
from lenvm_rl.ends import (
    NATURAL_EOS_MIN_PROB,
    end_eos_probability,
    end_label,
    eos_probability,
    eos_token_ids,
    p_eos_distribution,
)
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.scoring import NaiveCachedScorer, TreeScorer, copy_cache, naive_candidate_values
from tests.conftest import tiny_config


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("k", [1, 5, 15])
def test_tree_scoring_equals_naive_per_candidate_forwards(tokenizer, k, attn):
    # eager attention adds a 4-D mask to its scores: a boolean one (added as 0 / 1) let candidates see each other
    torch.manual_seed(0)
    config = tiny_config(len(tokenizer))
    config._attn_implementation = attn
    model = LengthValueModel(LlamaModel(config), gamma=0.99).eval()
    assert model.config._attn_implementation == attn
    g = torch.Generator().manual_seed(k)
    rows = [torch.randint(5, 900, (n,), generator=g).tolist() for n in (7, 3, 5, 1)]
    prefix, mask = left_pad(rows, 2)
    scorer = TreeScorer(model)
    scorer.start(prefix[:, :-1], mask[:, :-1])
    previous = prefix[:, -1]
    prefix, mask = prefix[:, :-1], mask[:, :-1]
    for _ in range(12):
        cands = torch.randint(5, 900, (4, k), generator=g)
        _, tree = scorer.step(previous, cands)
        prefix = torch.cat([prefix, previous[:, None]], 1)
        mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], 1)
        assert torch.allclose(tree, naive_candidate_values(model, prefix, mask, cands), atol=1e-4)
        previous = cands[torch.arange(4), torch.randint(0, k, (4,), generator=g)]
    assert scorer.cache.get_seq_length() == prefix.shape[1]  # the candidates never stay in the cache


def test_tree_scoring_refuses_attention_without_4d_masks(tiny_backbone):
    model = LengthValueModel(tiny_backbone, gamma=0.99)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='sdpa' or 'eager'"):
        TreeScorer(model)


@pytest.mark.parametrize("copy", [True, False])
def test_naive_cached_scorer_matches_tree_scorer(copy):
    """The sequential baseline (per-candidate cache copies, or the cache cropped back) scores the same states."""
    torch.manual_seed(0)
    model = LengthValueModel(LlamaModel(tiny_config(300)), gamma=0.99).eval()
    g = torch.Generator().manual_seed(1)
    prompts, mask = left_pad([torch.randint(5, 300, (n,), generator=g).tolist() for n in (10, 7, 8)], 2)
    tree, naive = TreeScorer(model), NaiveCachedScorer(model, copy=copy)
    torch.testing.assert_close(naive.start(prompts[:, :-1], mask[:, :-1]), tree.start(prompts[:, :-1], mask[:, :-1]))
    previous = prompts[:, -1]
    for _ in range(3):
        cands = torch.randint(5, 300, (3, 4), generator=g)
        for got, want in zip(naive.step(previous, cands), tree.step(previous, cands)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        previous = cands[:, 0]


def test_naive_scorer_copy_cache_is_a_real_copy():
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=[(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))])
    dup = copy_cache(cache)
    dup.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 0)
    assert cache.get_seq_length() == 5 and dup.get_seq_length() == 6
    assert dup.layers[0].keys.data_ptr() != cache.layers[0].keys.data_ptr()


# ---- an oracle critic on a known length process -----------------------------------------------------------
EOS, PAD, GAMMA = 0, 1, 0.9
VOCAB = 20  # token 10 + d promises "d more tokens, then EOS"


def promise(token: int) -> int:
    return token - 10


def toy_logits(ids: torch.Tensor) -> torch.Tensor:
    """The base process keeps the last promise: 10 + (d - 1) next, EOS once it is 0; other tokens less likely."""
    logits = torch.full((ids.shape[0], VOCAB), -float("inf"))
    for b, last in enumerate(ids[:, -1].tolist()):
        logits[b, 10:20] = 0.0
        d = promise(last)
        if d > 0:
            logits[b, 10 + d - 1] = 3.0
        else:
            logits[b, EOS] = 3.0
    return logits


class OracleScorer:
    """Exact values of the toy process: after token 10 + d, d + 1 tokens remain (EOS included)."""

    def start(self, prompt_ids, mask):
        return torch.zeros(prompt_ids.shape[0])

    def step(self, previous, candidates):
        d = (candidates - 10).clamp(min=0).double()
        return None, -(1 - GAMMA ** (d + 1))


def toy_generate(mode, target, rule="soft", start_token=15, steps=40, logits=None, scorer=None, **kw):
    """Greedy toy generation under a rule (the oracle critic unless ``scorer``); returns the processor and the
    generated ids (up to EOS)."""
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    proc = LengthGuidedLogitsProcessor(critic, mode, target, top_k=11, rule=rule, scorer=scorer or OracleScorer(), **kw)
    ids = torch.tensor([[PAD, 3, 4, start_token]])
    for _ in range(steps):
        nxt = proc(ids, (logits or toy_logits)(ids)).argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        if nxt.item() == EOS:
            break
    return proc, ids[0, 4:].tolist()


def run_toy(mode, target, **kw):
    """Generated tokens without EOS, or None when no EOS came within the steps."""
    _, row = toy_generate(mode, target, **kw)
    return len(row) - 1 if row[-1] == EOS else None


def toy_end(mode, target, **kw):
    proc, row = toy_generate(mode, target, **kw)
    tok = SimpleNamespace(eos_token_id=EOS, decode=lambda ids, **_: " ".join(map(str, ids)))
    rec = completion_record(row, tok, proc.eos_natural()[0].tolist())
    assert rec["finished"] == (rec["end"] == "natural")
    return rec["end"], rec["num_tokens"]


@pytest.mark.parametrize("target", [1, 3, 7, 9, 12])
def test_equal_with_an_oracle_critic_hits_the_target_exactly(target):
    assert run_toy("equal", target, value_tolerance=0) == target  # the nearest-value rule
    assert run_toy("equal", target) == target  # the default tolerance: strict as the target nears


def base_logp(row):
    """Summed log-probability of a greedy toy path under the toy process itself."""
    ids, total = [PAD, 3, 4, 15], 0.0
    for tok in row:
        total += torch.log_softmax(toy_logits(torch.tensor([ids])), -1)[0, tok].item()
        ids.append(tok)
    return total


@pytest.mark.parametrize("target", [12, 15, 20])
def test_value_tolerance_trades_length_against_probability(target):
    # the toy can only promise up to 9 more tokens, so the nearest-value rule takes several unlikely tokens to get
    # there; the tolerant rule follows the base process early and makes up the length near the target
    _, nearest = toy_generate("equal", target, value_tolerance=0)
    _, tolerant = toy_generate("equal", target, value_tolerance=0.5)
    assert len(nearest) - 1 == len(tolerant) - 1 == target  # both hit the target with an oracle ...
    assert base_logp(tolerant) > base_logp(nearest) + 3.0  # ... the tolerant path with likelier tokens
    _, tiny_tau = toy_generate("equal", target, value_tolerance=1e-6)
    assert tiny_tau == nearest  # tau -> 0 recovers the nearest value
    _, extreme = toy_generate("equal", target, rule="extreme", value_tolerance=0.5)
    assert extreme == nearest  # the reference rule ignores the tolerance


def test_value_weighted_step_is_p_times_exp_minus_gap_over_tau():
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    proc = LengthGuidedLogitsProcessor(critic, "equal", 10, top_k=4, scorer=OracleScorer(), value_tolerance=0.3)
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, 0.0]]), -1)
    values = torch.tensor([[-0.5, -0.6, -0.7, -0.65]])
    ids, keep = torch.tensor([[11, 12, 13, 14]]), torch.ones(1, 4, dtype=torch.bool)
    out = proc.rule_logp(ids, logp, keep, values, generated=2)
    tau = GAMMA**8 - GAMMA ** (1.3 * 8)  # r = 8 tokens left
    v_star = -(1 - GAMMA**8)
    expected = torch.softmax(logp - (values - v_star).abs() / tau, -1)
    assert torch.allclose(torch.softmax(out, -1), expected, atol=1e-6)
    assert proc.value_temperature(2) == pytest.approx(tau) and proc.value_temperature(10) == 0.0
    with pytest.raises(ValueError, match="value_tolerance"):
        LengthGuidedLogitsProcessor(critic, "equal", 10, scorer=OracleScorer(), value_tolerance=-1)


def test_value_weighted_steps_of_at_most_and_at_least():
    """at_most's fitting step (no candidate fits) and every at_least step before the target sample
    p(x) exp(-|V - v*| / tau) instead of one candidate."""
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0]]), -1)
    ids, keep = torch.tensor([[11, 12, 13]]), torch.ones(1, 3, dtype=torch.bool)
    v_star = -(1 - GAMMA**8)
    for mode, values, too_short in (
        ("at_most", torch.tensor([[-0.9, -0.95, -0.99]]), [False] * 3),  # all predicted too long
        ("at_least", torch.tensor([[-0.1, -0.2, -0.3]]), [True] * 3),  # all predicted too short
        ("at_least", torch.tensor([[-0.1, -0.99, v_star]]), [True, False, False]),  # mixed: all are weighed
    ):
        assert (values > v_star)[0].tolist() == too_short
        soft = LengthGuidedLogitsProcessor(critic, mode, 10, top_k=3, scorer=OracleScorer(), value_tolerance=0.5)
        out = soft.rule_logp(ids, logp, keep, values, generated=2)
        tau = soft.value_temperature(2)
        assert torch.allclose(
            torch.softmax(out, -1), torch.softmax(logp - (values - v_star).abs() / tau, -1), atol=1e-6
        )
        nearest = LengthGuidedLogitsProcessor(critic, mode, 10, top_k=3, scorer=OracleScorer(), value_tolerance=0)
        out = nearest.rule_logp(ids, logp, keep, values, generated=2)
        best = (values - v_star).abs().argmin().item()
        assert torch.isfinite(out).sum() == 1 and torch.isfinite(out[0, best])


def test_a_constant_critic_leaves_only_the_stop_rules():
    """ConstantScorer: the rules' code path with no length information; the guarantees still hold."""
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    for target in (3, 8):
        for mode in ("equal", "at_most", "at_least"):
            proc = LengthGuidedLogitsProcessor(critic, mode, target, top_k=11, scorer=ConstantScorer())
            ids = torch.tensor([[PAD, 3, 4, 15]])
            for _ in range(30):
                logits = toy_logits(ids)
                out = proc(ids, logits)
                allowed = torch.isfinite(out[0])
                if mode != "at_most" or ids.shape[1] - 4 < target:  # before the hard stop
                    base = torch.log_softmax(logits, -1)
                    if ids.shape[1] - 4 < target and mode != "at_most":
                        base[0, EOS] = -float("inf")
                    kept = torch.isfinite(base[0]) & allowed
                    # among what the rule allows, the candidates keep their base proportions
                    assert (
                        torch.allclose(torch.softmax(out[0, kept], -1), torch.softmax(base[0, kept], -1), atol=1e-5)
                        or kept.sum() == 1
                    )
                nxt = out.argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], 1)
                if nxt.item() == EOS:
                    break
            n = ids.shape[1] - 5
            if mode == "at_most":
                assert n <= target
            elif mode == "at_least":
                assert n >= target
            else:
                assert target <= n <= target + proc.overshoot
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        ConstantScorer(0.5)


def never_eos(ids):
    """The toy process with EOS never a candidate."""
    logits = toy_logits(ids)
    logits[:, EOS] = -float("inf")
    return logits


def test_equal_stops_at_target_plus_overshoot_when_eos_never_becomes_a_candidate():
    assert run_toy("equal", 6, logits=never_eos, overshoot=3) == 9
    assert run_toy("equal", 6, logits=never_eos, overshoot=0) == 6
    assert run_toy("equal", 40, logits=never_eos, steps=60) == 44  # default: max(4, 10 % of the target)
    with pytest.raises(ValueError, match="overshoot"):
        run_toy("equal", 6, overshoot=-1)


def test_how_rows_end_with_an_oracle():
    assert toy_end("at_most", 9) == ("natural", 5)  # the base answer fits: EOS is the generator's own choice
    assert toy_end("at_most", 3, logits=never_eos) == ("forced", 3)  # EOS at the target, put there by the rule
    assert toy_end("equal", 5) == ("natural", 5)  # EOS is a candidate when the target is reached
    assert toy_end("equal", 6, logits=never_eos, overshoot=2) == ("forced", 8)  # the hard stop
    assert toy_end("tilt", None, beta=0.0, logits=never_eos, steps=6) == ("cap", 6)  # no EOS before the cap


def test_the_toy_process_alone_would_miss():
    ids = torch.tensor([[PAD, 3, 4, 15]])
    for _ in range(20):
        ids = torch.cat([ids, toy_logits(ids).argmax(-1, keepdim=True)], 1)
        if ids[0, -1] == EOS:
            break
    assert ids.shape[1] - 5 == 5  # the base answer keeps the prompt's promise of 5 tokens


def test_at_most_and_at_least_with_an_oracle():
    assert run_toy("at_most", 9) == 5  # the base answer (5 tokens) fits: left alone
    assert run_toy("at_most", 3) <= 3
    # at_least aims at a natural end at the target, as the reference rule does (longest until the target, then
    # the shortest): the 5-token answer ends at 3 (the reference's at 4), and a too-short one is led to 8
    assert run_toy("at_least", 3) == 3 and run_toy("at_least", 3, rule="extreme") == 4
    assert run_toy("at_least", 8) == 8
    assert toy_end("at_least", 8) == ("natural", 8)
    assert run_toy("at_most", 9, rule="extreme") == 1  # the reference rule: shortest token (10), then EOS
    assert run_toy("at_least", 8, rule="extreme") >= 8


# ---- on a tiny random generator through model.generate ------------------------------------------------------
@pytest.fixture
def setup(tiny_causal_dir, tiny_backbone, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.97).eval(), tokenizer)
    return model, critic


PROMPTS = ["Hello there.", [{"role": "user", "content": "Write a long story about a cat."}], "Hi"]


def test_hard_guarantees_of_at_most_and_at_least(setup):
    model, critic = setup
    for out in generate_with_length(model, critic, PROMPTS, mode="at_most", target_tokens=6, max_new_tokens=20, seed=0):
        assert out["num_tokens"] <= 6 and out["end"] in ("natural", "forced")
    for out in generate_with_length(
        model, critic, PROMPTS, mode="at_least", target_tokens=10, max_new_tokens=20, seed=0
    ):
        assert out["num_tokens"] >= 10
    overshoot = max(4, math.ceil(0.1 * 8))  # the default hard stop: T + overshoot = 12, well under the 20-token cap
    for top_k in (None, 1):
        equal = generate_with_length(
            model, critic, PROMPTS, mode="equal", target_tokens=8, max_new_tokens=20, seed=0, top_k=top_k
        )
        for out in equal:
            assert 8 <= out["num_tokens"] <= 8 + overshoot  # never ends early, never past the hard stop
    # with one candidate per step EOS is (almost) never offered, so every row runs on past the target: the hard stop
    # is what ends them, at exactly T + overshoot and forced (a broken stop would let them run to the 20-token cap)
    assert all(o["num_tokens"] == 8 + overshoot and o["end"] == "forced" for o in equal)


def test_end_reasons_on_a_tiny_generator(setup, tokenizer):
    from lenvm_rl.evaluation.common import sample_plain

    model, critic = setup
    # one candidate per step (rarely EOS): at_most reaches the target and forces EOS there
    forced = generate_with_length(
        model, critic, PROMPTS, mode="at_most", target_tokens=2, top_k=1, max_new_tokens=8, seed=0
    )
    assert any(o["end"] == "forced" for o in forced)
    assert all(o["num_tokens"] == 2 for o in forced if o["end"] == "forced")
    capped = generate_with_length(model, critic, PROMPTS, mode="tilt", beta=0.0, max_new_tokens=2, seed=1)
    plain = sample_plain(model, tokenizer, PROMPTS * 4, max_new_tokens=24, seed=0)
    assert all(o["end"] in ("natural", "cap") for o in capped) and any(o["end"] == "cap" for o in capped)
    assert all(o["num_tokens"] == 2 for o in capped if o["end"] == "cap")
    assert {o["end"] for o in plain} == {"natural", "cap"}  # plain rows end on their own or at the cap
    assert all(o["num_tokens"] == 24 for o in plain if o["end"] == "cap")
    for o in forced + capped + plain:
        assert o["finished"] == (o["end"] == "natural")


def low_eos_logits(ids: torch.Tensor) -> torch.Tensor:
    """The toy process, but EOS always possible at a low logit (-2): a rule can pick it where the process would not."""
    logits = toy_logits(ids)
    logits[:, EOS] = torch.where(torch.isinf(logits[:, EOS]), torch.tensor(-2.0), logits[:, EOS])
    return logits


def toy_record(proc, row, **kw):
    tok = SimpleNamespace(eos_token_id=EOS, decode=lambda ids, **_: " ".join(map(str, ids)))
    natural, p_eos = proc.eos_natural()[0].tolist(), proc.eos_probabilities()[0].tolist()
    return completion_record(row, tok, natural, p_eos, **kw)


def test_equal_picking_an_unlikely_eos_at_the_target_is_forced_not_natural():
    # start 19 promises 9 more tokens and a critic without information follows the process (18, 17, ...); at the
    # target (5) EOS is a candidate at p ~ 0.005 and equal picks it (V = 0 is the goal, every other value -1): a
    # candidate, so it used to count as natural; the generator would rarely have ended there
    proc, row = toy_generate("equal", 5, start_token=19, logits=low_eos_logits, scorer=ConstantScorer(-1.0))
    assert row[-1] == EOS and len(row) - 1 == 5
    ids = torch.tensor([[PAD, 3, 4, 19, *row[:-1]]])
    expected = torch.softmax(low_eos_logits(ids), -1)[0, EOS].item()
    assert expected < NATURAL_EOS_MIN_PROB
    rec = toy_record(proc, row)
    assert rec["end"] == "forced" and not rec["finished"] and rec["p_eos"] == pytest.approx(expected, rel=1e-5)
    assert toy_record(proc, row, natural_eos_min_prob=0.0)["end"] == "natural"  # the old label: in the candidates
    # where the process itself ends (promise 5 runs out at 5 tokens), p_eos = e^3 / (e^3 + 10) and the end is natural
    proc, row = toy_generate("equal", 5, start_token=15)
    rec = toy_record(proc, row)
    assert rec["end"] == "natural" and rec["p_eos"] == pytest.approx(math.exp(3) / (math.exp(3) + 10), rel=1e-5)


def test_p_eos_is_recorded_every_step_at_the_sampling_temperature_before_any_rule():
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    proc = LengthGuidedLogitsProcessor(critic, "at_most", 2, top_k=3, scorer=OracleScorer(), temperature=0.5)
    ids = torch.tensor([[PAD, 3, 4, 12]])  # promise 2: EOS is -inf for two steps, then the process ends
    for step in range(3):
        scores = low_eos_logits(ids)
        out = proc(ids, scores)
        expected = torch.softmax(scores / 0.5, -1)[0, EOS].item()  # the generator's own, at the temperature
        assert proc.eos_probabilities()[0, step].item() == pytest.approx(expected, rel=1e-5)
        ids = torch.cat([ids, out.argmax(-1, keepdim=True)], 1)
    assert proc.eos_probabilities().shape == (1, 3)  # the hard stop's step (g = 2 = T) recorded too
    two = LengthGuidedLogitsProcessor(critic, "at_most", 2, top_k=3, scorer=OracleScorer(), eos_token_ids=[EOS, 11])
    scores = low_eos_logits(torch.tensor([[PAD, 3, 4, 12]]))
    two(torch.tensor([[PAD, 3, 4, 12]]), scores)
    assert two.eos_probabilities()[0, 0].item() == pytest.approx(torch.softmax(scores, -1)[0, [EOS, 11]].sum().item())


def test_ends_module_labels_and_distribution():
    assert end_label(False, False, None) == "cap"
    assert end_label(True, True, 0.9) == "forced"  # a rule put EOS there, however likely
    assert end_label(True, False, NATURAL_EOS_MIN_PROB) == "natural"
    assert end_label(True, False, NATURAL_EOS_MIN_PROB / 2) == "forced"
    assert end_label(True, False, None) == "natural"  # not recorded: only the rule decides
    with pytest.raises(ValueError, match="probability"):
        end_label(True, False, 0.5, 1.5)
    logits = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
    want = torch.softmax(logits / 0.7, -1)[0, [0, 3]].sum()
    assert eos_probability(logits, [0, 3], 0.7).item() == pytest.approx(want.item())
    d = p_eos_distribution([0.01, 0.5, None, 0.9, 1.0])
    assert d["n"] == 4 and d["min"] == 0.01 and d["median"] == pytest.approx(0.7) and d["below_threshold"] == 0.25
    assert p_eos_distribution([None]) == {"n": 0}
    tok = SimpleNamespace(eos_token_id=5)
    assert eos_token_ids(tok, SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7, 5]))) == [5, 7]


def test_every_row_records_p_eos_and_it_matches_one_forward_over_the_answer(setup, tokenizer):
    from lenvm_rl.data import encode_prompt
    from lenvm_rl.evaluation.common import sample_plain

    model, critic = setup
    # tilt towards EOS (V = 0) over every token with a constant critic: EOS wins at once, wherever the generator put it
    kw = dict(mode="tilt", beta=40.0, top_k=len(tokenizer), max_new_tokens=4, seed=0, scorer=ConstantScorer(-1.0))
    tilted = generate_with_length(model, critic, PROMPTS, temperature=0.7, **kw)
    plain = sample_plain(model, tokenizer, PROMPTS * 4, max_new_tokens=24, seed=0, temperature=0.7)
    assert all(o["num_tokens"] == 0 for o in tilted)
    # the rule's end wherever the generator gave EOS less than the threshold, a candidate's end (the old label) at 0
    above = max(o["p_eos"] for o in tilted) + 1e-3
    assert all(
        o["end"] == "forced" for o in generate_with_length(model, critic, PROMPTS, natural_eos_min_prob=above, **kw)
    )
    assert all(
        o["end"] == "natural" for o in generate_with_length(model, critic, PROMPTS, natural_eos_min_prob=0, **kw)
    )
    assert all(o["end"] == ("natural" if o["p_eos"] >= NATURAL_EOS_MIN_PROB else "forced") for o in tilted)
    ended = [(p, o) for p, o in zip(PROMPTS, tilted)] + [
        (p, o) for p, o in zip(PROMPTS * 4, plain) if o["end"] != "cap"
    ]
    assert len(ended) > len(PROMPTS)  # some plain rows ended too
    assert all(o["p_eos"] is None for o in plain if o["end"] == "cap")
    prompt_ids = [encode_prompt(tokenizer, p, critic.use_chat_template) for p, _ in ended]
    again = end_eos_probability(model, prompt_ids, [o["token_ids"] for _, o in ended], [tokenizer.eos_token_id], 0.7)
    for (_, o), p in zip(ended, again):
        assert o["p_eos"] == pytest.approx(p, rel=1e-3, abs=1e-7)


def test_rules_only_on_a_tiny_generator_keeps_the_guarantees(setup):
    model, critic = setup
    for mode, target in (("at_most", 6), ("at_least", 10), ("equal", 8)):
        outs = generate_with_length(
            model, critic, PROMPTS, mode=mode, target_tokens=target, max_new_tokens=20, seed=0, scorer=ConstantScorer()
        )
        for o in outs:
            n = o["num_tokens"]
            assert (n <= target) if mode == "at_most" else (n >= target)
            assert o["finished"] == (o["end"] == "natural")
    a = generate_with_length(
        model, critic, PROMPTS, mode="equal", target_tokens=8, max_new_tokens=20, seed=0, value_tolerance=0.0
    )
    b = generate_with_length(
        model,
        critic,
        PROMPTS,
        mode="equal",
        target_tokens=8,
        max_new_tokens=20,
        seed=0,
        do_sample=False,
        value_tolerance=0.0,
    )
    assert [x["token_ids"] for x in a] == [x["token_ids"] for x in b]  # nearest value: deterministic either way
    with pytest.raises(ValueError, match="value_tolerance"):
        generate_with_length(
            model, critic, PROMPTS, mode="equal", target_tokens=8, max_new_tokens=20, value_tolerance=float("nan")
        )


def test_greedy_is_deterministic_and_tilt_runs(setup):
    model, critic = setup
    a = generate_with_length(model, critic, PROMPTS, mode="tilt", beta=5.0, max_new_tokens=12, do_sample=False)
    b = generate_with_length(model, critic, PROMPTS, mode="tilt", beta=5.0, max_new_tokens=12, do_sample=False)
    assert [x["token_ids"] for x in a] == [x["token_ids"] for x in b]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="equal", target_tokens=0), "positive whole number"),
        (dict(mode="equal", target_tokens=50, max_new_tokens=20), "exceeds max_new_tokens"),
        (dict(mode="fastest", target_tokens=5), "unknown mode"),
        (dict(mode="tilt", beta=float("nan")), "finite beta"),
        (dict(mode="tilt"), "finite beta"),
        (dict(mode="at_most", target_tokens=5, rule="wild"), "unknown rule"),
    ],
)
def test_bad_requests(setup, kwargs, match):
    model, critic = setup
    with pytest.raises(ValueError, match=match):
        generate_with_length(model, critic, ["hi"], **{"max_new_tokens": 20, **kwargs})


def test_vocabulary_mismatch_is_refused(setup, tokenizer):
    import copy

    model, critic = setup
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<zzz_new>"])
    with pytest.raises(TokenizerMismatchError):
        generate_with_length(model, critic, ["hi"], tokenizer=other, mode="at_most", target_tokens=4, max_new_tokens=8)


def test_tilting_with_a_constant_critic_only_favours_eos():
    """The EOS-bonus control of `lenvm eval tradeoff`: with every value -1 (EOS keeps 0), tilting at beta = b
    multiplies EOS's probability by e^b among the candidates and leaves the other candidates' ratios alone."""
    critic = SimpleNamespace(gamma=GAMMA, tokenizer=SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD))
    ids = torch.tensor([[PAD, 3, 4, 10]])  # promise 0: EOS is the likeliest candidate
    logits = toy_logits(ids)
    logits[0, 11] = 1.0  # one other candidate more likely than the rest
    base = torch.log_softmax(logits.float(), -1)[0]
    for b in (0.0, 2.0):
        proc = LengthGuidedLogitsProcessor(critic, "tilt", beta=b, top_k=11, scorer=ConstantScorer(-1.0))
        out = torch.log_softmax(proc(ids, logits.clone()), -1)[0]
        assert out[EOS] - out[12] == pytest.approx((base[EOS] - base[12]).item() + b, abs=1e-5)
        assert out[11] - out[12] == pytest.approx((base[11] - base[12]).item(), abs=1e-5)
