"""Length-guided decoding with a frozen LenVM: hit an exact / maximum / minimum token count, or tilt.

Each step, the generator's next-token distribution gives a candidate set (temperature, then top-k, top-p,
min-p; by default the sampling the critic's rollouts were drawn with and a min-p floor, :mod:`lenvm_rl.candidates`);
the critic scores every candidate in one forward (:mod:`lenvm_rl.scoring`); EOS candidates have V = 0. A rule never
chooses a token outside the candidates, except EOS where it forces the end. With ``g`` tokens generated so far and a target of ``T`` tokens (generator tokens, EOS not counted),
a non-EOS candidate x fits when the tokens it predicts still to come, ``n(V(s+x))`` (EOS included), equal
``T - g``; in value space the goal is ``v* = -(1 - gamma ** (T - g))``.

    equal     sample from ``p(x) * exp(-|V(s+x) - v*| / tau)`` over the candidates (see "Trading length
              against probability" below; ``value_tolerance=0`` gives the nearest-value candidate, ties to the
              more probable one); EOS is masked before the target and chosen when the target is reached and
              EOS is a candidate; past the target the shortest-predicted candidate wins until EOS is one; a
              hard stop ends the answer at ``target + overshoot`` tokens as the last resort (default
              overshoot: max(4, 10 % of the target))
    at_most   sample as usual among candidates that still fit (V >= v*); when none fits, the fitting step
              samples from ``p(x) * exp(-|V(s+x) - v*| / tau)`` (all are predicted too long, so this favours
              the shortest-predicted, trading a token of length against probability); EOS forced at the target
    at_least  EOS masked before the target; before it, sample from ``p(x) * exp(-|V(s+x) - v*| / tau)`` as
              equal does (aim at a natural end near the target; EOS's mask keeps the answer from ending
              sooner); from the target on, the generator alone (no steering, no hard stop). An earlier rule
              sampled among the candidates predicted long enough (V <= v*): on token-level LIFEBench it led
              more answers to the cap than no critic at all, since nothing kept them near the target
    tilt      sample from p'(x) ~ p(x) * exp(beta * V(s+x)) over the candidates; beta > 0 shortens

Trading length against probability (``value_tolerance``, written rho below). The value-picking steps use a
temperature ``tau_t`` in value units that follows the target: with ``r = T - g`` tokens left,

    tau_t = |v*(r) - v*((1 + rho) r)| = gamma ** r - gamma ** ((1 + rho) r)

the value distance of a length error of ``rho`` times the remaining length. A candidate predicted ``rho * r``
tokens too long therefore weighs ``1/e`` of an exact fit of the same base probability. Far from the target
(large r) the rule follows the generator's own preferences; as the target nears tau_t shrinks, and at
``r = 0`` it is 0 (the nearest value wins). The default rho = 0.1 (10 % of what is left) keeps the final
tokens exact while letting early tokens be the generator's likely ones; ``value_tolerance=0`` is the old
deterministic "nearest value" rule, kept for comparison.

What each stop rule guarantees by itself, whatever the critic predicts (a constant critic included):

    EOS masked before the target   equal and at_least never end before ``T`` tokens (EOS is removed from
                                   the candidates while ``g < T``)
    forced at the target           at_most never exceeds ``T`` tokens (at ``g = T`` EOS is the only choice)
    hard stop                      equal never exceeds ``T + overshoot`` tokens (EOS forced there)
    max_new_tokens                 every mode stops there (``end = "cap"``); at_least and tilt have no other
                                   upper bound

The critic only decides which tokens fill the answer in between; the lengths above hold without it.

Per-step trust region (``trust_region`` = epsilon, nats; default off): each step the rule's distribution stays
within ``KL(q || p) <= epsilon`` of the generator's candidate distribution, its strength (temperature) chosen by
bisection (:mod:`lenvm_rl.trust_region`); where a rule forces EOS (a hard stop) the trust region does not apply.
The budget in the prompt (``length_prompt``, :mod:`lenvm_rl.length_prompt`) states the target to the generator.

``rule="extreme"`` gives the reference code's rules for comparison: at most = always the shortest
candidate; at least = the longest until the target, then end as soon as possible; equal = the nearest value
(``value_tolerance`` ignored, i.e. 0).

Sampling vs greedy: with ``do_sample=True`` every mode samples from its (restricted, tilted or
value-weighted) candidate distribution; with ``do_sample=False`` it takes that distribution's most probable
entry. With ``value_tolerance=0`` (or ``rule="extreme"``) ``equal`` and the fitting steps pick one candidate
deterministically given the candidate set, in both cases.

How each row ended (``end`` in every record, :mod:`lenvm_rl.ends`): ``"natural"`` when no rule forced EOS and
the generator's own probability of ending there, ``p_eos`` (its unmodified distribution at the sampling
temperature, before any rule, top-k or top-p; summed over its EOS ids), is at least ``natural_eos_min_prob``
(default :data:`~lenvm_rl.ends.NATURAL_EOS_MIN_PROB`); ``"forced"`` when a rule put EOS there (at_most's EOS at the
target, equal's hard stop, EOS from outside the candidate set) or chose it where ``p_eos`` was below the threshold
(equal picks EOS at the target whenever it is a candidate; at_most's restriction renormalises it upward); ``"cap"``
when ``max_new_tokens`` ran out without EOS. ``finished`` is True for natural ends only; every record carries
``p_eos`` at the step where it ended (None for a capped row).

:class:`ConstantScorer` stands in for the critic's scorer with one value for every candidate: the rules then
run on the same code path with no length information (the ``rules_only`` arm of ``lenvm eval lifebench``).
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

from .candidates import candidate_settings, check_min_p
from .critic import LengthCritic
from .ends import EosProbabilityRecorder, check_natural_eos_min_prob, end_label, eos_probability, eos_token_ids
from .length_prompt import length_prompt_text, with_length_prompt
from .returns import check_gamma, remaining_to_value
from .scoring import TreeScorer
from .trust_region import candidate_logp, check_trust_region, trust_region_logp

MODES = ("equal", "at_most", "at_least", "tilt")
RULES = ("soft", "extreme")
DEFAULT_TOP_K = {"equal": 15, "at_most": 15, "at_least": 15, "tilt": 50}
DEFAULT_VALUE_TOLERANCE = 0.1  # rho: a length error of 10 % of the remaining tokens costs a factor e


def check_value_tolerance(value_tolerance: float | None) -> float:
    """``value_tolerance`` (rho) as a float >= 0; None means the default."""
    if value_tolerance is None:
        return DEFAULT_VALUE_TOLERANCE
    rho = float(value_tolerance)
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"value_tolerance must be a finite number >= 0 (0 = nearest value), got {value_tolerance!r}")
    return rho


def value_temperature(remaining: int, gamma: float, value_tolerance: float) -> float:
    """``tau = gamma ** r - gamma ** ((1 + rho) r)``: the value distance of a length error of ``rho * r`` tokens
    with ``r`` tokens left (0 when ``r <= 0`` or ``rho == 0``)."""
    r = max(int(remaining), 0)
    return float(gamma**r - gamma ** ((1.0 + value_tolerance) * r))


class ConstantScorer:
    """A scorer (the interface of :class:`~lenvm_rl.scoring.TreeScorer`) that gives every candidate the same value.

    It carries no length information, so with it the rules run on their usual code path and only the stop rules
    act: every candidate is equally near the goal, the value-weighted steps sample by base probability (greedy:
    ties go to the more probable candidate). The default 0 is the one constant that leaves EOS (V = 0 by
    definition) indistinguishable from the other candidates as well.
    """

    def __init__(self, value: float = 0.0):
        if not -1.0 <= value <= 0.0:
            raise ValueError(f"a LenVM value lies in [-1, 0], got {value}")
        self.value = float(value)

    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, **vision) -> torch.Tensor:
        return torch.full((prompt_ids.shape[0],), self.value)

    def step(self, previous: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.full((candidates.shape[0],), self.value),
            torch.full(candidates.shape, self.value, device=candidates.device),
        )


def check_request(
    mode: str, target_tokens: int | None, beta: float | None, max_new_tokens: int | None, rule: str = "soft"
) -> None:
    """Clear errors for bad decoding requests (mode, target, beta)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose 'soft' (ours) or 'extreme' (the reference code's)")
    if mode == "tilt":
        if beta is None or not math.isfinite(float(beta)):
            raise ValueError(f"mode='tilt' needs a finite beta (beta > 0 shortens, < 0 lengthens), got {beta!r}")
        return
    if target_tokens is None or int(target_tokens) != target_tokens or target_tokens < 1:
        raise ValueError(f"mode={mode!r} needs target_tokens, a positive whole number of tokens, got {target_tokens!r}")
    if max_new_tokens is not None and target_tokens > max_new_tokens:
        raise ValueError(
            f"target_tokens={target_tokens} exceeds max_new_tokens={max_new_tokens}; raise "
            "max_new_tokens (it is the hard stop) or lower the target"
        )


class LengthGuidedLogitsProcessor(LogitsProcessor):
    """A ``LogitsProcessor`` for ``model.generate`` that applies one of the rules above.

    It builds the candidate set itself (``temperature``, ``top_k``, ``top_p``, ``min_p``: taken as given here, no
    floor when None; :func:`lenvm_rl.candidates.candidate_settings` gives the defaults :func:`generate_with_length`
    uses) and returns log-probabilities that are ``-inf`` outside the chosen / allowed candidates. Give the sampling
    settings here and call ``generate`` with ``temperature=1.0, top_k=0, top_p=1.0`` (as :func:`generate_with_length`
    does), so they are not applied twice. One processor serves one ``generate`` call.

    ``trust_region`` (epsilon > 0, nats; None = off): each step's rule stays within ``KL(q || p) <= epsilon`` of the
    generator's candidate distribution (:mod:`lenvm_rl.trust_region`); the KL of every step is kept
    (:meth:`step_kl`).

    ``value_tolerance`` (rho, default 0.1) sets how much length the value-picking steps trade for probability
    (module docstring; 0 = nearest value). ``scorer`` replaces the critic's tree scorer (e.g.
    :class:`ConstantScorer`). ``eos_token_ids``: the ids whose probabilities sum to ``p_eos``, recorded every step
    from the generator's own scores (default: ``eos_token_id`` alone)."""

    def __init__(
        self,
        critic: LengthCritic,
        mode: str,
        target_tokens: int | None = None,
        beta: float | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        min_p: float | None = None,
        rule: str = "soft",
        overshoot: int | None = None,
        scorer=None,
        value_tolerance: float | None = None,
        vision_inputs: dict | None = None,
        eos_token_ids: list[int] | None = None,
        trust_region: float | None = None,
    ):
        check_request(mode, target_tokens, beta, None, rule)
        self.trust_region = check_trust_region(trust_region)
        if min_p is not None:
            check_min_p(min_p)
        self.value_tolerance = 0.0 if rule == "extreme" else check_value_tolerance(value_tolerance)
        if overshoot is not None and overshoot < 0:
            raise ValueError(f"overshoot must be >= 0 tokens, got {overshoot}")
        if temperature <= 0:
            raise ValueError("temperature must be > 0 (use do_sample=False for greedy decoding)")
        self.gamma = check_gamma(critic.gamma)
        self.mode, self.target, self.beta, self.rule = mode, target_tokens, beta, rule
        tok = critic.tokenizer
        self.eos = eos_token_id if eos_token_id is not None else tok.eos_token_id
        self.pad = (
            pad_token_id
            if pad_token_id is not None
            else (tok.pad_token_id if tok.pad_token_id is not None else self.eos)
        )
        self.temperature, self.top_k = temperature, top_k or DEFAULT_TOP_K[mode]
        self.top_p, self.min_p = top_p, min_p
        self.scorer = scorer if scorer is not None else TreeScorer(critic.model)
        self.vision_inputs = dict(vision_inputs or {})  # a VLM prompt's images: the critic caches their tokens
        self.prompt_length = None
        self.eos_natural_steps = []  # per step, (B,): EOS is in the row's candidate set and no rule forces it
        self.eos_ids = list(eos_token_ids) if eos_token_ids is not None else [self.eos]
        self.p_eos_steps = []  # per step, (B,): the generator's own probability of ending (lenvm_rl.ends)
        self.kl_steps = []  # per step, (B,): KL(rule || generator's candidates), with the trust region on
        if mode == "equal":
            self.overshoot = overshoot if overshoot is not None else max(4, math.ceil(0.1 * target_tokens))

    # -------------------------------------------------------------------- candidate set
    def candidates(self, scores: torch.Tensor, generated: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k candidate ids (B, K), their log-probs, and which survive top-p / min-p, highest first."""
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        if self.mode in ("equal", "at_least") and generated < self.target:
            logp[:, self.eos] = -math.inf  # never end before the target
        top_logp, top_ids = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1)
        probs = top_logp.exp()
        keep = torch.isfinite(top_logp)
        if self.top_p < 1.0:
            keep &= (probs.cumsum(-1) - probs) < self.top_p  # the nucleus of the full distribution
        if self.min_p:  # the floor: below min_p x the most probable candidate, never a rule's choice
            keep &= probs >= self.min_p * probs[:, :1]
        keep[:, 0] = True
        return top_ids, top_logp, keep

    # -------------------------------------------------------------------- one step
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
            mask = ((input_ids != self.pad).cumsum(-1) > 0).long()  # left padding: leading pad tokens only
            self.scorer.start(input_ids[:, :-1], mask[:, :-1], **self.vision_inputs)
        generated = input_ids.shape[1] - self.prompt_length
        self.p_eos_steps.append(eos_probability(scores, self.eos_ids, self.temperature).cpu())  # before any rule
        out = torch.full_like(scores, -math.inf)
        if (self.mode == "at_most" and generated >= self.target) or (
            self.mode == "equal" and generated >= self.target + self.overshoot
        ):
            out[:, self.eos] = 0.0  # the hard stop: every row is at the limit at the same step
            self.eos_natural_steps.append(torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device))
            return out
        ids, logp, keep = self.candidates(scores, generated)
        self.eos_natural_steps.append(((ids == self.eos) & keep).any(-1))
        if self.mode == "at_least" and self.rule != "extreme" and generated >= self.target:
            values = torch.zeros_like(logp)  # past its target at_least samples the generator's own: no critic needed
        else:
            _, values = self.scorer.step(input_ids[:, -1], ids)
            values = values.to(logp.device).float().masked_fill(ids == self.eos, 0.0)  # EOS: terminal, V = 0
        rule = self.rule_logp(ids, logp, keep, values, generated)
        if self.trust_region is not None:
            cost, kappa = self.rule_family(values, keep, generated)
            rule, kl = trust_region_logp(candidate_logp(logp, keep), rule, cost, kappa, self.trust_region)
            self.kl_steps.append(kl.cpu())
        return out.scatter(1, ids, rule.to(scores.dtype))

    def eos_natural(self) -> torch.Tensor:
        """(B, steps) bool: entry ``[b, j]`` says an EOS picked at step j (generated token j) of row b came from
        the generator's candidate set and was not forced by a rule; rule outputs never leave that set otherwise."""
        if not self.eos_natural_steps:
            return torch.zeros(0, 0, dtype=torch.bool)
        return torch.stack(self.eos_natural_steps, 1).cpu()

    def eos_probabilities(self) -> torch.Tensor:
        """(B, steps) float: ``[b, j]`` is the generator's own probability of EOS at step j of row b (its scores at the
        sampling temperature, before the rule, top-k and top-p)."""
        if not self.p_eos_steps:
            return torch.zeros(0, 0)
        return torch.stack(self.p_eos_steps, 1)

    def step_kl(self) -> torch.Tensor:
        """(B, steps) float: with the trust region on, ``KL(q || p)`` of every step that was not a hard stop, where q
        is what the rule sampled from and p the generator's candidate distribution (empty when off)."""
        if not self.kl_steps:
            return torch.zeros(0, 0)
        return torch.stack(self.kl_steps, 1)

    def goal_value(self, generated: int) -> float:
        """``v* = -(1 - gamma ** (T - g))``: the value of a state with exactly the right number of tokens to come."""
        return float(remaining_to_value(max(self.target - generated, 0), self.gamma))

    def value_temperature(self, generated: int) -> float:
        """``tau_t`` of the value-weighted steps (module docstring); 0 at and past the target."""
        return value_temperature(self.target - generated, self.gamma, self.value_tolerance)

    def rule_logp(self, ids, logp, keep, values, generated: int) -> torch.Tensor:
        """New log-probs over the candidates (``-inf`` = excluded). ``-values`` ranks shortest-predicted first
        (EOS, V = 0, is the shortest of all)."""
        if self.mode == "tilt":
            return torch.where(keep, logp + self.beta * values, torch.full_like(logp, -math.inf))
        v_star = self.goal_value(generated)
        gap = (values - v_star).abs()
        if self.mode == "equal":  # past the target v* = 0 and tau = 0: EOS (a candidate by then) or the shortest
            return self._value_weighted(gap, keep, logp, generated)
        if self.mode == "at_most":
            if self.rule == "extreme":
                return self._one_hot(-values, keep, logp)
            return self._allowed_or_fallback(keep & (values >= v_star), keep, logp, gap, generated)
        if generated >= self.target:  # at_least, target reached
            return (
                self._one_hot(-values, keep, logp)
                if self.rule == "extreme"
                else torch.where(keep, logp, torch.full_like(logp, -math.inf))
            )
        if self.rule == "extreme":
            return self._one_hot(values, keep, logp)  # the longest-predicted candidate
        # Aim at the target, as equal does: restricting to "predicted long enough" (V <= v*) let a critic walk
        # into answers that ran to the cap (see the module docstring, at_least)
        return self._value_weighted(gap, keep, logp, generated)

    def rule_family(self, values, keep, generated: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rule as a member of ``p(x) exp(-kappa c(x))``: cost ``c`` (B, K) and strength ``kappa`` (B,; ``inf``:
        only the cheapest candidates), as :mod:`lenvm_rl.trust_region` lists; at its kappa it is :meth:`rule_logp`
        (in the infinite limit up to ties, which rule_logp gives to the more probable candidate)."""
        rows = values.shape[0]
        inf = torch.full((rows,), math.inf, device=values.device)
        if self.mode == "tilt":
            return -self.beta * values, torch.ones(rows, device=values.device)
        gap = (values - self.goal_value(generated)).abs()
        tau = self.value_temperature(generated)
        soft = torch.full((rows,), 1.0 / tau if tau > 0 else math.inf, device=values.device)
        reached = generated >= self.target
        if self.rule == "extreme":
            cost = {"equal": gap, "at_most": -values, "at_least": -values if reached else values}[self.mode]
            return cost, inf
        if self.mode == "equal":
            return gap, soft
        if self.mode == "at_most":
            fits = keep & (values >= self.goal_value(generated))
            some = fits.any(-1)
            return torch.where(some[:, None], (~fits).to(gap.dtype), gap), torch.where(some, inf, soft)
        if reached:  # at_least past its target: the generator alone
            return torch.zeros_like(gap), torch.zeros(rows, device=values.device)
        return gap, soft

    def _value_weighted(self, gap, keep, logp, generated: int) -> torch.Tensor:
        """``log p(x) - |V(s+x) - v*| / tau`` over the candidates; with ``tau = 0`` the nearest value only."""
        tau = self.value_temperature(generated)
        if tau <= 0.0:
            return self._one_hot(gap, keep, logp)
        return torch.where(keep, logp - gap / tau, torch.full_like(logp, -math.inf))

    @staticmethod
    def _one_hot(cost: torch.Tensor, keep: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """Keep only the lowest-cost candidate per row; candidates are sorted by probability, so ties go to
        the more probable one (``argmin`` returns the first minimum)."""
        choice = cost.masked_fill(~keep, math.inf).argmin(-1, keepdim=True)
        return torch.full_like(logp, -math.inf).scatter(1, choice, 0.0)

    def _allowed_or_fallback(self, allowed, keep, logp, gap, generated: int) -> torch.Tensor:
        """Base log-probs restricted to ``allowed`` (at_most: candidates that still fit); rows with nothing allowed take
        the value-weighted fitting step (every candidate is predicted too long, so the nearest is the shortest)."""
        restricted = torch.where(allowed, logp, torch.full_like(logp, -math.inf))
        return torch.where(allowed.any(-1, keepdim=True), restricted, self._value_weighted(gap, keep, logp, generated))


def generate_with_length(
    model,
    critic: LengthCritic,
    prompts,
    tokenizer=None,
    mode: str = "equal",
    target_tokens: int | None = None,
    beta: float | None = None,
    max_new_tokens: int = 512,
    do_sample: bool = True,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    rule: str = "soft",
    overshoot: int | None = None,
    use_chat_template: bool | None = None,
    seed: int | None = None,
    value_tolerance: float | None = None,
    scorer=None,
    images=None,
    streamer=None,
    natural_eos_min_prob: float | None = None,
    length_prompt: str | None = None,
    trust_region: float | None = None,
    guide: bool = True,
) -> list[dict]:
    """Generate for a batch of prompts (strings or chat messages) under a length rule.

    The candidate set: ``temperature`` / ``top_p`` default to the sampling the critic's rollouts were drawn with
    (else 0.7 / 0.9) and ``min_p`` to a floor of 0.05 (0 = none), :func:`lenvm_rl.candidates.candidate_settings`.
    ``length_prompt`` (None / "none", "default" or a template with ``{target}``, :mod:`lenvm_rl.length_prompt`)
    appends the budget to each prompt's last user message; ``trust_region`` (epsilon, nats per step; None = off)
    holds each step's rule within ``KL <= epsilon`` of the generator's candidates (:mod:`lenvm_rl.trust_region`).
    ``guide=False`` samples plainly with the same settings (no critic; the stop rules are off too): with
    ``length_prompt`` the "prompt only" combination, its rows labelled as plain sampling's are.

    Returns one dict per prompt: ``text``, ``token_ids`` (without EOS), ``num_tokens`` (without EOS), ``end``
    (``"natural"``, ``"forced"`` or ``"cap"``, see the module docstring), ``finished`` (a natural end) and ``p_eos``
    (the generator's own probability of EOS where the row ended; an EOS below ``natural_eos_min_prob``, default
    :data:`~lenvm_rl.ends.NATURAL_EOS_MIN_PROB`, is the rule's choice and counts as forced).
    The critic may be smaller than the generator; their vocabularies must match. Prompts are encoded in the
    critic's training format (``critic.use_chat_template``) unless ``use_chat_template`` says otherwise.
    ``value_tolerance`` (rho, default 0.1; 0 = nearest value) and ``scorer`` (e.g. ``ConstantScorer()`` for a
    critic without information) go to :class:`LengthGuidedLogitsProcessor`. ``streamer`` is passed to
    ``generate`` (e.g. a ``TextStreamer``) to see the tokens as they come.

    Vision-language generator and critic: ``images[i]`` lists prompt i's images; ``tokenizer`` (or the critic's
    own) is then the processor, which renders the prompts; the generator and the critic both read the images.
    """
    from .critic import left_pad
    from .data import encode_prompt

    check_request(mode, target_tokens, beta, max_new_tokens, rule)
    check_value_tolerance(value_tolerance)
    check_trust_region(trust_region)
    min_prob = check_natural_eos_min_prob(natural_eos_min_prob)
    settings = candidate_settings(critic, temperature, top_p, min_p)
    budget = length_prompt_text(length_prompt, mode, target_tokens)  # every check comes before any generation
    prompts = [with_length_prompt(p, budget) for p in prompts]
    from .vlm import is_processor, render_prompts, vision_inputs

    tokenizer = tokenizer or critic.processor or critic.tokenizer
    critic.check_tokenizer(tokenizer)
    if use_chat_template is None:
        use_chat_template = critic.use_chat_template
    vision = {}
    if images is not None or critic._has_image_parts(prompts):
        vlm_processor = tokenizer if is_processor(tokenizer) else critic._vision_processor()
        enc = render_prompts(vlm_processor, prompts, images, use_chat_template)
        ids, mask, vision = enc["input_ids"], enc["attention_mask"], vision_inputs(enc)
    tokenizer = tokenizer.tokenizer if is_processor(tokenizer) else tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if not vision:
        ids, mask = left_pad([encode_prompt(tokenizer, p, use_chat_template) for p in prompts], pad)
    device = next(model.parameters()).device
    common = dict(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        **{k: v.to(device) if torch.is_tensor(v) else v for k, v in vision.items()},
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        streamer=streamer,
    )
    if seed is not None:
        torch.manual_seed(seed)
    if not guide:  # plain sampling with the same settings: generate's own warpers; p_eos recorded before them
        recorder = EosProbabilityRecorder(eos_token_ids(tokenizer, model), settings.temperature if do_sample else 1.0)
        warpers = dict(temperature=settings.temperature, top_p=settings.top_p, min_p=settings.min_p or None, top_k=0)
        out = model.generate(logits_processor=[recorder], **(warpers if do_sample else {}), **common)
        rows = out[:, ids.shape[1] :].tolist()
        records = [completion_record(row, tokenizer, p_eos=p) for row, p in zip(rows, recorder.p_eos())]
        return [dict(r, length_prompt=budget) for r in records]
    processor = LengthGuidedLogitsProcessor(
        critic,
        mode,
        target_tokens,
        beta,
        tokenizer.eos_token_id,
        pad,
        settings.temperature,
        top_k,
        settings.top_p,
        settings.min_p,
        rule,
        overshoot,
        scorer,
        value_tolerance,
        vision_inputs=vision,
        eos_token_ids=eos_token_ids(tokenizer, model),
        trust_region=trust_region,
    )
    out = model.generate(logits_processor=[processor], temperature=1.0, top_k=0, top_p=1.0, **common)
    natural, p_eos = processor.eos_natural().tolist(), processor.eos_probabilities().tolist()
    return [
        dict(completion_record(row, tokenizer, eos_natural, p, min_prob), length_prompt=budget)
        for row, eos_natural, p in zip(out[:, ids.shape[1] :].tolist(), natural, p_eos)
    ]


def completion_record(
    row: list[int],
    tokenizer,
    eos_natural: list[bool] | None = None,
    p_eos: list[float] | None = None,
    natural_eos_min_prob: float | None = None,
) -> dict:
    """One generated row (ids after the prompt) as ``text``, ``token_ids`` and ``num_tokens`` (up to, without,
    the first EOS), ``end``, ``finished`` (``end == "natural"``), ``p_eos`` (``p_eos[end]``, None when not given
    or capped) and ``rule_forced`` (a rule put EOS there whatever its probability: a hard stop, or EOS from outside
    the candidates; a ``forced`` end without it is an EOS the rule chose below the threshold).

    ``eos_natural[j]``: an EOS at step j would not be forced by a rule
    (:meth:`LengthGuidedLogitsProcessor.eos_natural`); with it, an EOS whose ``p_eos`` is below
    ``natural_eos_min_prob`` is forced too (:func:`lenvm_rl.ends.end_label`). None for plain generation: no rule
    chose its EOS, so every one is natural (``p_eos`` is still recorded, the reference distribution).
    """
    end = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else None
    body = row[:end] if end is not None else row
    at_end = p_eos[end] if end is not None and p_eos is not None and end < len(p_eos) else None
    forced = end is not None and eos_natural is not None and not (end < len(eos_natural) and eos_natural[end])
    if end is None:
        how = "cap"
    elif eos_natural is None:
        how = "natural"
    else:
        how = end_label(True, forced, at_end, natural_eos_min_prob)
    return {
        "text": tokenizer.decode(body, skip_special_tokens=True),
        "token_ids": body,
        "num_tokens": len(body),
        "end": how,
        "finished": how == "natural",
        "p_eos": at_end,
        "rule_forced": forced,
    }
