"""The arms of token-level LIFEBench (the entry point, lenvm_rl.evaluation.lifebench, says what each one is) and the
one made without generating: ``truncate``, plain's answers cut at the target."""

from __future__ import annotations

ARMS = ("plain", "truncate", "rules_only", "lenvm", "extreme")
GUIDED_ARMS = ("rules_only", "lenvm", "extreme")  # their EOS may be a rule's choice: labelled by the threshold


def truncated(outs: list[dict], target: int, tokenizer) -> list[dict]:
    """Plain answers cut at the target: a cut one (longer, or stopped by the cap) ends ``"forced"``."""
    cut = []
    for o in outs:
        if o["num_tokens"] > target or o["end"] == "cap":
            ids = list(o["token_ids"][:target])
            cut.append(
                {
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "token_ids": ids,
                    "num_tokens": len(ids),
                    "end": "forced",
                    "finished": False,
                    "p_eos": None,
                    "rule_forced": True,
                }
            )
        else:
            cut.append(dict(o))
    return cut
