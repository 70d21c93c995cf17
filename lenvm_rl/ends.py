"""How a generated answer ended, judged by the generator's own probability of ending there.

A decoding rule can choose EOS where the generator would rarely end: ``equal`` picks EOS deterministically at the
target when it is among the candidates, ``at_most`` renormalises EOS upward when it restricts the candidates, and a
tilt boosts it. "EOS was a candidate" therefore says little. What does say whether an end is the generator's own is
``p_eos``: the probability its unmodified next-token distribution (at the sampling temperature, before any rule,
top-k or top-p) gives to ending at that step, summed over every EOS id of its generation config.

    natural   EOS, no rule forced it, and p_eos >= NATURAL_EOS_MIN_PROB
    forced    EOS a rule put there (a hard stop), or one chosen where p_eos < NATURAL_EOS_MIN_PROB: without the
              rule the generator would rarely have ended there
    cap       the token cap ran out without EOS

NATURAL_EOS_MIN_PROB = 0.05, read from plain sampling's own ends: with the embedded default generator at temperature
0.7 and top-p 0.9 on token-level LIFEBench prompts, the 142 answers of the committed run that ended before the cap
did so where p_eos was at least 0.030 (1st percentile 0.049, 2nd 0.074, 5th 0.102, median 0.66); 2 of the 142
(1.4 %) lie below 0.05 (evals/results/natural_end_recount). At about the 1st-2nd percentile, the threshold leaves
almost every end the generator makes on its own natural, while an end it gives less than a one-in-twenty chance is
the rule's doing. The 5th percentile (0.1) is the stricter reading; the recount reports both.

Plain sampling (no rule) labels every EOS natural and records ``p_eos`` as the reference distribution.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

NATURAL_EOS_MIN_PROB = 0.05  # module docstring: about the 1st-2nd percentile of plain sampling's own ends
ENDS = ("natural", "forced", "cap")


def check_natural_eos_min_prob(value: float | None) -> float:
    """The threshold as a float in [0, 1]; None means :data:`NATURAL_EOS_MIN_PROB`."""
    if value is None:
        return NATURAL_EOS_MIN_PROB
    x = float(value)
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise ValueError(
            f"natural_eos_min_prob is a probability in [0, 1] (default {NATURAL_EOS_MIN_PROB}), got {value!r}"
        )
    return x


def eos_token_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends an answer: the tokenizer's EOS and the generator's ``generation_config.eos_token_id`` (an
    int or a list; chat models often list several, e.g. Qwen's ``<|im_end|>`` and ``<|endoftext|>``)."""
    ids = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if extra is not None:
        ids.update(int(i) for i in (extra if isinstance(extra, (list, tuple)) else [extra]))
    if not ids:
        raise ValueError(
            "no EOS token id: set tokenizer.eos_token_id or the generator's generation_config.eos_token_id"
        )
    return sorted(ids)


def eos_probability(logits: torch.Tensor, eos_ids, temperature: float = 1.0) -> torch.Tensor:
    """``p_eos``: the probability of ending under ``softmax(logits / temperature)``, summed over ``eos_ids``; logits
    ``(..., V)`` -> ``(...)``, in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp[..., list(eos_ids)].logsumexp(-1).exp()


def end_label(ended_with_eos: bool, forced: bool, p_eos: float | None, min_prob: float | None = None) -> str:
    """``natural``, ``forced`` or ``cap`` for one answer (module docstring). ``forced``: a rule put EOS there;
    ``p_eos`` None (not recorded) counts as natural only when nothing was forced, as before the threshold."""
    if not ended_with_eos:
        return "cap"
    if forced:
        return "forced"
    if p_eos is not None and p_eos < check_natural_eos_min_prob(min_prob):
        return "forced"
    return "natural"


class EosProbabilityRecorder(LogitsProcessor):
    """A ``LogitsProcessor`` that records ``p_eos`` per step and leaves the scores as they are.

    ``generate`` runs custom processors before its temperature / top-k / top-p warpers, so the scores it sees are
    the generator's own; give it the sampling ``temperature``. One recorder serves one ``generate`` call."""

    def __init__(self, eos_ids, temperature: float = 1.0):
        self.eos_ids, self.temperature = list(eos_ids), float(temperature)
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.record(scores)
        return scores

    def record(self, scores: torch.Tensor) -> None:
        self.steps.append(eos_probability(scores, self.eos_ids, self.temperature).cpu())

    def p_eos(self) -> list[list[float]]:
        """Per row, ``p_eos`` at every generated step (step j: before generated token j)."""
        if not self.steps:
            return []
        return torch.stack(self.steps, 1).tolist()


@torch.no_grad()
def end_eos_probability(
    generator,
    prompt_ids: list[list[int]],
    body_ids: list[list[int]],
    eos_ids,
    temperature: float = 1.0,
    batch_size: int = 8,
    pad_token_id: int = 0,
) -> list[float]:
    """``p_eos`` after each answer's body (its tokens without EOS): one forward of the generator over prompt + body,
    the last position's distribution at ``temperature``. For an answer that ended with EOS this is the probability
    the generator gave to ending where it did; it equals what :class:`EosProbabilityRecorder` records while
    generating, up to numerics: the generation config's ``suppress_tokens`` are masked as ``generate`` masks them
    (its history-dependent processors, e.g. a repetition penalty, are not applied). Rows are left-padded with
    position ids from the mask, as ``generate`` does."""
    device = next(generator.parameters()).device
    suppress = getattr(getattr(generator, "generation_config", None), "suppress_tokens", None) or []
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = [
            list(p) + list(b)
            for p, b in zip(prompt_ids[start : start + batch_size], body_ids[start : start + batch_size])
        ]
        if any(not r for r in rows):
            raise ValueError("end_eos_probability needs a non-empty prompt for every answer")
        kw = left_padded(rows, pad_token_id, device)
        try:
            logits = generator(**kw, logits_to_keep=1).logits[:, -1]
        except TypeError:  # a model without logits_to_keep
            logits = generator(**kw).logits[:, -1]
        if suppress:
            logits = logits.float().index_fill(-1, torch.tensor(suppress, device=logits.device), -math.inf)
        out += eos_probability(logits, eos_ids, temperature).tolist()
    return out


def left_padded(rows: list[list[int]], pad_token_id: int, device) -> dict:
    """``input_ids``, ``attention_mask`` and ``position_ids`` of token rows left-padded to the longest, positions
    counted from each row's first real token, as ``generate`` lays out a batch."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))


def p_eos_distribution(values) -> dict:
    """Summary of ``p_eos`` at the ends: n, min, 5th / 10th / 25th percentiles, median, mean, and the share below
    :data:`NATURAL_EOS_MIN_PROB` (None entries, answers without EOS, are left out)."""
    xs = sorted(float(v) for v in values if v is not None and math.isfinite(v))
    if not xs:
        return {"n": 0}
    t = torch.tensor(xs, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.05, 0.10, 0.25, 0.5], dtype=torch.float64)).tolist()
    return {
        "n": len(xs),
        "min": xs[0],
        "p5": q[0],
        "p10": q[1],
        "p25": q[2],
        "median": q[3],
        "mean": float(t.mean()),
        "below_threshold": float((t < NATURAL_EOS_MIN_PROB).double().mean()),
    }


def relabel(rows: list[dict], min_prob: float | None = None) -> list[dict]:
    """Set ``end`` / ``finished`` of guided rows (``end``, ``p_eos``, ``rule_forced``) from the threshold, in place:
    the label is a function of what was recorded, so a stored run can be read at another threshold. Rows stored
    before ``rule_forced`` was recorded take it from their old label (then ``forced`` meant a rule's EOS only)."""
    for r in rows:
        r.setdefault("rule_forced", r["end"] == "forced")
        r["end"] = end_label(r["end"] != "cap", r["rule_forced"], r.get("p_eos"), min_prob)
        r["finished"] = r["end"] == "natural"
    return rows
