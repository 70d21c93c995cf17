"""Verifiable tasks the 135M default can learn on CPU: opposites (a verbosity task) and small additions."""

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


# --------------------------------------------------------------------------- opposites (a verbosity task)
# Written for this project: query word -> accepted answers (the first is the canonical one). The 135M default
# knows most of them but wraps the answer in a paragraph, so shorter answers are not more often right here:
# the task separates "shorter" from "more correct", which addition cannot.
OPPOSITES = {
    "hot": "cold cool chilly freezing",
    "big": "small little tiny",
    "fast": "slow",
    "up": "down",
    "light": "dark darkness heavy",
    "happy": "sad unhappy sorrowful",
    "good": "bad evil",
    "old": "new young",
    "open": "closed close shut",
    "early": "late",
    "rich": "poor",
    "tall": "short",
    "long": "short brief",
    "wet": "dry",
    "hard": "soft easy",
    "strong": "weak",
    "full": "empty",
    "high": "low",
    "day": "night",
    "black": "white",
    "love": "hate",
    "win": "lose loss",
    "begin": "end finish stop",
    "push": "pull",
    "buy": "sell",
    "give": "take receive",
    "inside": "outside",
    "above": "below beneath under",
    "top": "bottom",
    "front": "back rear behind",
    "left": "right",
    "near": "far distant",
    "true": "false untrue",
    "always": "never",
    "before": "after",
    "first": "last",
    "laugh": "cry",
    "clean": "dirty",
    "thick": "thin",
    "wide": "narrow",
    "deep": "shallow",
    "loud": "quiet soft silent",
    "sharp": "dull blunt",
    "smooth": "rough",
    "sweet": "sour bitter salty",
    "friend": "enemy foe",
    "safe": "dangerous unsafe",
    "cheap": "expensive costly",
    "brave": "cowardly scared afraid fearful timid coward",
    "kind": "cruel unkind mean",
    "polite": "rude impolite",
    "beautiful": "ugly",
    "simple": "complex complicated difficult hard",
    "question": "answer",
    "north": "south",
    "east": "west",
    "summer": "winter",
    "male": "female",
    "king": "queen",
    "boy": "girl",
    "man": "woman",
    "husband": "wife",
    "brother": "sister",
    "alive": "dead",
    "awake": "asleep",
    "accept": "reject refuse decline",
    "arrive": "depart leave",
    "borrow": "lend",
    "build": "destroy demolish",
    "increase": "decrease reduce",
    "remember": "forget",
    "include": "exclude",
    "import": "export",
    "maximum": "minimum",
    "majority": "minority",
    "success": "failure fail",
    "victory": "defeat loss",
    "war": "peace",
    "heaven": "hell",
    "positive": "negative",
    "active": "passive inactive",
    "ancient": "modern new",
    "artificial": "natural real",
    "visible": "invisible hidden",
    "agree": "disagree",
    "appear": "disappear vanish",
    "allow": "forbid prohibit deny ban disallow",
    "obey": "disobey defy",
    "entrance": "exit",
    "floor": "ceiling roof",
    "sunrise": "sunset",
    "noisy": "quiet silent",
    "generous": "selfish stingy greedy mean",
    "honest": "dishonest lying deceitful",
    "humble": "proud arrogant",
    "innocent": "guilty",
    "major": "minor",
    "optimist": "pessimist",
    "patient": "impatient",
    "present": "absent past",
    "public": "private",
    "rare": "common frequent",
    "sober": "drunk",
    "tame": "wild",
    "vertical": "horizontal",
    "ascend": "descend",
    "expand": "contract shrink",
    "float": "sink",
    "freeze": "melt thaw boil",
    "lead": "follow",
    "teach": "learn",
    "sit": "stand",
    "come": "go leave",
    "odd": "even",
    "dawn": "dusk",
    "inhale": "exhale",
    "input": "output",
    "internal": "external",
    "junior": "senior",
    "fat": "thin skinny slim",
    "quick": "slow",
    "sick": "healthy well",
    "strict": "lenient relaxed",
    "wise": "foolish stupid unwise",
    "cause": "effect",
    "permanent": "temporary",
    "plural": "singular",
    "tight": "loose",
    "shout": "whisper",
    "mountain": "valley",
    "enter": "exit leave",
    "hero": "villain coward",
    "joy": "sorrow sadness misery grief",
    "lazy": "hardworking diligent energetic industrious",
    "arrival": "departure",
    "wealth": "poverty",
    "cheerful": "gloomy sad miserable",
    "lost": "found",
}
OPPOSITES_HELD_OUT = 48  # evaluation words, never used for RL or for the critic's rollouts
_ARTICLES = {"a", "an", "the"}


def opposites_split(seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_words, eval_words)``: a fixed split of :data:`OPPOSITES` (48 evaluation words)."""
    words = sorted(OPPOSITES)
    random.Random(seed).shuffle(words)
    return sorted(words[OPPOSITES_HELD_OUT:]), sorted(words[:OPPOSITES_HELD_OUT])


def opposites_prompt(word: str) -> list[dict]:
    return [{"role": "user", "content": f"What is the opposite of '{word}'?"}]


def opposites_dataset(words, repeats: int = 1, seed: int = 0):
    """``{"prompt": messages, "word": str, "answer": [aliases]}`` rows, shuffled with ``seed``."""
    from datasets import Dataset

    rows = [{"prompt": opposites_prompt(w), "word": w, "answer": OPPOSITES[w].split()} for w in words] * repeats
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows)


def _words(text: str):
    return list(re.finditer(r"[a-z]+", text.lower()))


def first_stated_answer(text: str, word: str) -> tuple[str | None, int]:
    """The first stated answer to "what is the opposite of ``word``" and the character index where it ends.

    The answer is the first word after the first "is", "are" or ":" that follows the query word ("The opposite
    of 'hot' is 'cold'."), articles skipped; without the query word in the text, the first word ("Cold.").
    Anything after that word is not read, so a wrong first claim cannot be fixed later.
    """
    lower = text.lower()
    start = 0
    query = re.search(rf"\b{re.escape(word.lower())}\b", lower)
    if query:
        cue = re.search(r"\b(?:is|are)\b|:", lower[query.end() :])
        if cue:
            start = query.end() + cue.end()
    for match in _words(lower[start:]):
        if match.group() not in _ARTICLES:
            return match.group(), start + match.end()
    return None, len(text)


def opposites_reward(completions, word, answer, **kwargs) -> list[float]:
    """1.0 when the first stated answer (:func:`first_stated_answer`) is one of the accepted words, else 0.0."""
    out = []
    for completion, query, accepted in zip(completions, word, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        stated, _ = first_stated_answer(text, query)
        out.append(1.0 if stated is not None and stated in set(accepted) else 0.0)
    return out


def answer_sentence_end(text: str, word: str) -> int:
    """Character index just past the sentence that states the answer (its next ".", "!", "?" or newline)."""
    _, end = first_stated_answer(text, word)
    stop = re.search(r"[.!?\n]", text[end:])
    return end + stop.end() if stop else len(text)
