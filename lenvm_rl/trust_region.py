"""A per-step trust region for length-guided decoding: the rule's distribution stays within KL epsilon of the generator's.

Every rule of :mod:`lenvm_rl.decoding` samples, over the candidates, from a member of one family

    q_kappa(x) = p(x) exp(-kappa c(x)) / Z(kappa)

where ``p`` is the generator's candidate distribution (its probabilities at the sampling temperature over the
candidate set, renormalised: what sampling from the candidates without the critic would draw), ``c`` the rule's
cost of a candidate and ``kappa`` its strength (an inverse temperature):

    equal, at_least before the target   c = |V(s+x) - v*|, kappa = 1 / tau_t (the value temperature; infinite at
                                        tau = 0, where the nearest value alone is left)
    at_most                             c = [x does not fit], kappa = infinite (p restricted to what fits); with
                                        nothing fitting, the value-weighted step above
    tilt                                c = -beta V(s+x), kappa = 1
    at_least from the target on         c = 0 (the generator alone)
    rule="extreme"                      the reference code's orders (c = |V - v*|, -V or V), kappa = infinite

KL(q_kappa || p) grows with kappa (its derivative is ``kappa Var_q(c) >= 0``), from 0 at kappa = 0 (the generator's
own) to the rule's at its kappa. With a budget ``epsilon`` (nats per step), each step and row keeps the rule as it
is when ``KL(rule || p) <= epsilon``; otherwise it samples from ``q_kappa`` with the largest ``kappa`` whose KL is at
most ``epsilon``, found by bisection. So the rule's temperature is chosen every step: the fixed ``rho`` schedule is
what the trust region leaves alone wherever it costs less than ``epsilon``, and a large ``epsilon`` gives the
unconstrained rule back exactly. The hard rules are outside the trust region: EOS masked before the target is part
of ``p`` (it is not a candidate), and a hard stop (at_most at the target, equal at target + overshoot) forces EOS
whatever the budget says.
"""

from __future__ import annotations

import math

import torch

BISECTION_STEPS = 50  # halves the bracket of t = kappa / (1 + kappa) to 2**-50


def check_trust_region(epsilon: float | None) -> float | None:
    """``epsilon`` (nats of KL per step) as a float > 0; None turns the trust region off."""
    if epsilon is None:
        return None
    x = float(epsilon)
    if not math.isfinite(x) or x <= 0:
        raise ValueError(
            f"trust_region is a KL budget per step in nats, a finite number > 0 (None = off), got {epsilon!r}"
        )
    return x


def candidate_logp(logp: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Log-probabilities renormalised over the kept candidates (``-inf`` elsewhere)."""
    masked = torch.where(keep, logp, torch.full_like(logp, -math.inf))
    return masked - masked.logsumexp(-1, keepdim=True)


def kl_divergence(q_logp: torch.Tensor, p_logp: torch.Tensor) -> torch.Tensor:
    """``KL(q || p)`` per row of log-probability rows (``-inf`` = no mass); (B, K) -> (B,)."""
    terms = q_logp.exp() * (q_logp - p_logp)
    return torch.where(torch.isfinite(q_logp), terms, torch.zeros_like(terms)).sum(-1)


def tilted_logp(p_logp: torch.Tensor, cost: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """``log q_kappa``: ``p exp(-kappa c)`` renormalised, ``kappa`` (B,) finite and >= 0."""
    support = torch.isfinite(p_logp)
    logits = p_logp - kappa[:, None] * torch.where(support, cost, torch.zeros_like(cost))
    return torch.log_softmax(logits, -1)


def trust_region_logp(
    p_logp: torch.Tensor, rule_logp: torch.Tensor, cost: torch.Tensor, kappa: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule's log-probs over the candidates held within ``KL <= epsilon`` of ``p`` (module docstring), and the
    KL of what is returned, per row.

    ``p_logp``: the generator's candidate distribution (normalised, ``-inf`` outside the candidates); ``rule_logp``:
    the unconstrained rule's log-probs (any normalisation); ``cost`` (B, K) and ``kappa`` (B,; ``inf`` allowed): the
    rule's member of the family. Rows whose rule is within the budget are returned unchanged."""
    p = p_logp.double()
    support = torch.isfinite(p)
    rule = torch.log_softmax(rule_logp.double(), -1)
    kl_rule = kl_divergence(rule, p)
    within = kl_rule <= epsilon
    if bool(within.all()):
        return rule_logp, kl_rule.float()
    # Costs shifted to start at 0 and scaled to spread 1 over the candidates, so one bracket of t fits every row
    c = torch.where(support, cost.double(), torch.full_like(p, math.inf))
    low = c.min(-1, keepdim=True).values
    spread = torch.where(support, c, torch.full_like(p, -math.inf)).max(-1, keepdim=True).values - low
    flat = spread <= 0  # every candidate costs the same: the family is p itself
    c = torch.where(support, (c - low) / torch.where(flat, torch.ones_like(spread), spread), torch.zeros_like(p))
    k = torch.where(flat[:, 0], torch.zeros_like(spread[:, 0]), kappa.double().to(p.device) * spread[:, 0])
    t_max = torch.where(torch.isinf(k), torch.ones_like(k), k / (1 + k))
    lo, hi = torch.zeros_like(t_max), t_max.clone()
    for _ in range(BISECTION_STEPS):  # KL grows with t: keep lo within the budget, hi above it
        mid = (lo + hi) / 2
        ok = kl_divergence(tilted_logp(p, c, mid / (1 - mid)), p) <= epsilon
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    held = tilted_logp(p, c, lo / (1 - lo))
    held = torch.where(support, held, torch.full_like(held, -math.inf))
    kl = torch.where(within, kl_rule, kl_divergence(held, p))
    return torch.where(within[:, None], rule_logp, held.to(rule_logp.dtype)), kl.float()
