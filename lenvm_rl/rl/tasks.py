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


# --------------------------------------------------------------------------- mixed (answers of very different lengths)
# Written for this project: prompt kinds whose correct answers differ several-fold in length (a one-word opposite;
# a count of 10 to 30 numbers), so a fixed length budget fits one kind and not the other. Checkers read the first
# stated answer only.
# Tuned on the validation split with the 135M default (evals/results/rl_mixed_lengths/README.md): it answered "the
# opposites of k listed words" correctly in none of 64 samples (k = 2, 3), so that kind was dropped; counts that do
# not start at 1 were right in about a quarter (it counts in twos from 2, or starts again at 1), and counts of
# fewer than 10 numbers put the two kinds' correct answers less than 5x apart. Sampled as training samples (the
# full vocabulary; transformers' generate would cut it to the top 50 unless told otherwise), the plain one-word
# question was right about a quarter of the time; a quoted worked example ("on" -> "off", neither a task word nor an
# answer) raised that to about half without lengthening the answers much.
ONE_WORDING = 'The opposite of "on" is "off". What is the opposite of "{word}"? Answer with one word.'
MIXED_KINDS = ("one", "count")
MIXED_HELD_OUT = {"one": 48, "count": 36}  # evaluation prompts per kind (fixed, never trained or tuned on)
MIXED_VALIDATION = {"one": 32, "count": 32}  # carved from the training side, to tune wording on
COUNT_SIZES = (10, 30)  # how many numbers a "count" prompt asks for (inclusive); counts start at 1
COUNT_WORDINGS = (
    "List the numbers from {start} to {stop}, separated by commas.",
    "Write the numbers from {start} to {stop}, separated by commas.",
    "Count from {start} to {stop}, separated by commas.",
    "List the whole numbers from {start} to {stop}, separated by commas.",
)


def mixed_prompt(kind: str, words=(), start: int = 0, stop: int = 0, wording: int = 0) -> list[dict]:
    if kind == "one":
        text = ONE_WORDING.format(word=words[0])
    elif kind == "count":
        text = COUNT_WORDINGS[wording].format(start=start, stop=stop)
    else:
        raise ValueError(f"unknown mixed prompt kind {kind!r}; choose from {MIXED_KINDS}")
    return [{"role": "user", "content": text}]


def _mixed_row(kind, words=(), start=0, stop=0, wording=0) -> dict:
    return {
        "prompt": mixed_prompt(kind, words, start, stop, wording),
        "kind": kind,
        "words": list(words),
        "answer": [OPPOSITES[w].split() for w in words],
        "start": start,
        "stop": stop,
    }


def mixed_split(seed: int = 0) -> dict[str, list[dict]]:
    """``{"train", "validation", "eval"}`` rows of the mixed task, fixed by ``seed``.

    Words of the "one" kind come from :func:`opposites_split` (evaluation prompts use only its 48 held-out
    words; validation prompts use 16 training words that the training prompts do not); "count" prompts are
    split by their (stop, wording) pair. The training split has as many prompts of each kind (count prompts repeat).
    """
    rng = random.Random(seed)
    train_words, eval_words = opposites_split(seed)
    shuffled = list(train_words)
    rng.shuffle(shuffled)
    pools = {"validation": sorted(shuffled[:16]), "train": sorted(shuffled[16:]), "eval": eval_words}
    # (stop, wording) pairs: the first 48 of the shuffled list were set aside before the wording was tuned, 36 of
    # them are the held-out prompts and 12 train; the next 32 are the validation prompts it was tuned on.
    ranges = [(1, n, w) for n in range(COUNT_SIZES[0], COUNT_SIZES[1] + 1) for w in range(len(COUNT_WORDINGS))]
    rng.shuffle(ranges)
    held, val = MIXED_HELD_OUT["count"], MIXED_VALIDATION["count"]
    count = {"eval": ranges[:held], "validation": ranges[48 : 48 + val], "train": ranges[held:48] + ranges[48 + val :]}
    # As many training prompts of each kind: the few count prompts are repeated.
    count["train"] = [count["train"][i % len(count["train"])] for i in range(len(pools["train"]))]
    out = {}
    for split, words in pools.items():
        n = {"eval": MIXED_HELD_OUT, "validation": MIXED_VALIDATION}.get(split)
        one = list(words) if n is None else [words[i % len(words)] for i in range(n["one"])]
        rows = [_mixed_row("one", [w]) for w in one]
        rows += [_mixed_row("count", start=a, stop=b, wording=w) for a, b, w in count[split]]
        out[split] = rows
    return out


def mixed_dataset(rows, repeats: int = 1, seed: int = 0):
    """A ``datasets.Dataset`` of mixed rows (from :func:`mixed_split`), repeated and shuffled with ``seed``."""
    from datasets import Dataset

    rows = list(rows) * repeats
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows)


_LIST_MARKER = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*])\s+")


def count_spans(text: str, start: int, stop: int) -> tuple[bool, list[tuple[int, int]]]:
    """Whether the first count in ``text`` is exactly ``start, start + 1, .., stop`` (not going on past ``stop``),
    and the character spans of its numbers in ``text`` (empty when no count starts). List markers ("1. ", "- ")
    are not numbers of the count."""
    plain = _LIST_MARKER.sub(lambda m: " " * len(m.group()), text)  # same length: spans index ``text`` too
    numbers = [(int(m.group()), m.start(), m.end()) for m in re.finditer(r"-?\d+", plain)]
    values = [v for v, _, _ in numbers]
    want = list(range(start, stop + 1))
    for i, v in enumerate(values):
        if v == start and (len(want) == 1 or values[i + 1 : i + 2] == [start + 1]):
            ok = values[i : i + len(want)] == want and values[i + len(want) : i + len(want) + 1] != [stop + 1]
            return ok, [(a, b) for _, a, b in numbers[i : i + len(want)]]
    return False, []


def counted_run(text: str, start: int, stop: int) -> tuple[bool, int]:
    """Whether the first count in ``text`` is exactly ``start..stop`` (:func:`count_spans`), and where it ends."""
    ok, spans = count_spans(text, start, stop)
    return ok, spans[-1][1] if spans else len(text)


def mixed_check(text: str, kind: str, words=(), answer=(), start: int = 0, stop: int = 0) -> tuple[bool, int]:
    """``(correct, answer_end)`` of one completion of a mixed prompt (the end: the character where the answer
    sentence or the count ends, to count the tokens written after it)."""
    if kind == "one":
        stated, _ = first_stated_answer(text, words[0])
        return stated is not None and stated in set(answer[0]), answer_sentence_end(text, words[0])
    if kind == "count":
        return counted_run(text, start, stop)
    raise ValueError(f"unknown mixed prompt kind {kind!r}; choose from {MIXED_KINDS}")


def mixed_reward(completions, kind, words, answer, start, stop, **kwargs) -> list[float]:
    """1.0 when the first stated answer of a mixed prompt is right (:func:`mixed_check`), else 0.0."""
    out = []
    for completion, *row in zip(completions, kind, words, answer, start, stop):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        out.append(1.0 if mixed_check(text, *row)[0] else 0.0)
    return out


# --------------------------------------------------------------------------- tasks by name
TASK_REWARDS = {
    "addition": addition_reward,
    "gsm8k": gsm8k_reward,
    "opposites": opposites_reward,
    "mixed": mixed_reward,
}


def task_reward(name: str):
    """The reward function of a task by name, or a clear error naming the tasks there are."""
    if name not in TASK_REWARDS:
        raise ValueError(f"unknown task {name!r}; the tasks are {sorted(TASK_REWARDS)}")
    return TASK_REWARDS[name]
