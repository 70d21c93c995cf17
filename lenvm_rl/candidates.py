"""The candidate set of length-guided decoding: the sampling the critic was trained on, and a min-p floor.

A LenVM's values mean something only on text like its training answers. Each step the rules choose among candidate
tokens scored by the critic; with every token a candidate (temperature 1, no top-p), the critic's preferences can
walk an answer into tokens the generator rarely writes, where its values mean nothing and the text stops being
language. So by default the candidate set follows the sampling the critic's rollouts were drawn with:

    temperature, top_p   the critic's rollouts' recorded ``sampling`` (``lenvm_config.json``'s ``rollout_sampling``,
                         written by ``lenvm train`` and the quickstart; else the ``rollouts_train.jsonl`` beside the
                         checkpoint, the quickstart's layout); without either, 0.7 / 0.9 (the quickstart's)
    min_p                a floor: a candidate whose probability is below ``min_p`` times the most probable one's is
                         never chosen by a rule (default :data:`DEFAULT_MIN_P` = 0.05, the lower of the values the
                         min-p paper recommends (Nguyen et al. 2024, "Turning up the heat: min-p sampling"); 0 turns
                         it off). The only token a rule may put outside the candidates is EOS, where it forces the
                         end (at_most at the target, equal's hard stop)

Explicit settings win. ``lenvm generate``, ``lenvm demo`` and the evaluations print and record what they used
(:meth:`CandidateSettings.describe`). Importing this module imports no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

FALLBACK_TEMPERATURE, FALLBACK_TOP_P = 0.7, 0.9  # the quickstart's sampling, for critics without a record
DEFAULT_MIN_P = 0.05
QUICKSTART_ROLLOUTS = "rollouts_train.jsonl"  # beside the quickstart's model dir


@dataclass(frozen=True)
class CandidateSettings:
    """The candidate set's sampling settings and where ``temperature`` / ``top_p`` came from (``source``)."""

    temperature: float
    top_p: float
    min_p: float
    source: str

    def describe(self) -> str:
        return f"temperature {self.temperature:g}, top_p {self.top_p:g}, min_p {self.min_p:g} ({self.source})"

    def as_dict(self) -> dict:
        return asdict(self)


def check_min_p(min_p: float | None) -> float:
    """``min_p`` as a float in [0, 1); None means :data:`DEFAULT_MIN_P`."""
    if min_p is None:
        return DEFAULT_MIN_P
    x = float(min_p)
    if not math.isfinite(x) or not 0.0 <= x < 1.0:
        raise ValueError(
            f"min_p must be in [0, 1) (a share of the most probable candidate's probability; 0 = no floor, default "
            f"{DEFAULT_MIN_P}), got {min_p!r}"
        )
    return x


def rollout_sampling(records) -> dict | None:
    """The ``{"temperature", "top_p"}`` every rollout record shares (its ``sampling`` field), else None (records
    without it, or sampled with different settings: then no one setting describes the critic's training answers)."""
    seen = {
        (float(r["sampling"]["temperature"]), float(r["sampling"]["top_p"]))
        if isinstance(r.get("sampling"), dict) and {"temperature", "top_p"} <= set(r["sampling"])
        else None
        for r in records
    }
    if len(seen) != 1 or None in seen:
        return None
    (temperature, top_p) = seen.pop()
    return {"temperature": temperature, "top_p": top_p}


def recorded_sampling(critic) -> tuple[dict, str] | None:
    """The critic's rollouts' sampling and where it was found, or None: ``rollout_sampling`` of its
    ``lenvm_config.json`` (the model attribute), else the first record of the quickstart's rollouts beside it."""
    model = getattr(critic, "model", None)
    saved = getattr(model, "rollout_sampling", None)
    path = getattr(critic, "path", None)
    if saved:
        return dict(saved), f"the critic's rollouts, recorded in {path or 'the checkpoint'}/lenvm_config.json"
    if path:
        rollouts = Path(path).parent / QUICKSTART_ROLLOUTS
        if rollouts.is_file():
            with open(rollouts) as f:
                for line in f:
                    try:
                        found = rollout_sampling([json.loads(line)])
                    except json.JSONDecodeError:
                        continue
                    if found:
                        return found, f"the critic's rollouts, {rollouts}"
                    break
    return None


def candidate_settings(
    critic=None, temperature: float | None = None, top_p: float | None = None, min_p: float | None = None
) -> CandidateSettings:
    """The candidate set's settings: explicit values, else the critic's rollouts' (:func:`recorded_sampling`), else
    0.7 / 0.9; ``min_p`` None means :data:`DEFAULT_MIN_P`. Bad values are a ``ValueError``."""
    found = recorded_sampling(critic) if critic is not None and (temperature is None or top_p is None) else None
    if found and found[0]["temperature"] <= 0:  # greedy rollouts: no temperature to follow
        found = None
    base, source = found if found else ({"temperature": FALLBACK_TEMPERATURE, "top_p": FALLBACK_TOP_P}, None)
    source = source or "the quickstart's sampling; the critic records none"
    if temperature is not None and top_p is not None:
        source = "as given"
    elif temperature is not None or top_p is not None:
        source = f"{'temperature' if temperature is not None else 'top_p'} as given, the other from {source}"
    t = float(base["temperature"] if temperature is None else temperature)
    p = float(base["top_p"] if top_p is None else top_p)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy decoding for a single most probable token), got {t}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    return CandidateSettings(t, p, check_min_p(min_p), source)
