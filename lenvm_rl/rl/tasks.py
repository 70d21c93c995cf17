"""A verifiable task the 135M default can learn on CPU: small additions, with an exact-match reward."""

from __future__ import annotations

import random
import re

ADDITION = "lenvm:addition"


def addition_dataset(n: int = 512, seed: int = 0, max_operand: int = 20):
    """``{"prompt": messages, "answer": str}`` rows: "What is a + b?"."""
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        rows.append({"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)})
    return Dataset.from_list(rows)


def addition_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's first stated result equals the answer, else 0.0.

    The stated result is the number right after the first ``=`` or ``is`` ("7 + 5 = 12", "The sum is 12"), else
    the first number: small chat models restate the sum before answering, so the first number is often an
    operand. Anything after the first result is not read, so a wrong first claim cannot be fixed later.
    """
    out = []
    for completion, target in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        match = re.search(r"(?:=|\bis)\s*(-?\d+)", text) or re.search(r"(-?\d+)", text)
        out.append(1.0 if match and match.group(1) == str(target) else 0.0)
    return out


def gsm8k_reward(completions, answer, **kwargs) -> list[float]:
    """GSM8K exact match: the last number in the completion equals the number after '####' in ``answer``."""
    out = []
    for completion, ref in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        numbers = re.findall(r"-?\d[\d,]*\.?\d*", text)
        target = ref.split("####")[-1].strip().replace(",", "")
        out.append(1.0 if numbers and numbers[-1].replace(",", "").rstrip(".") == target else 0.0)
    return out


def as_prompts(dataset):
    """Give a dataset with a ``question`` column (GSM8K) the ``prompt`` column GRPO reads."""
    if "prompt" in dataset.column_names or "question" not in dataset.column_names:
        return dataset
    return dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["question"]}]})
