"""Small stand-ins for third-party data, written by hand in the real files' formats (no rows copied from them).

LIFEBench rows: ``id``, ``category`` (create / qa / reasoning; the real file has no summarization, the loader
skips it anyway), ``type``, ``lang`` (en / cn), ``task`` (a template with ``{word_count_type}`` and
``{word_count}``), ``raw_data``. GSM8K rows: ``question`` and ``answer`` (worked solution ending ``#### <number>``).
"""

from __future__ import annotations

import json
from pathlib import Path

_EN_REQUIREMENT = "\n\n[Requirement] {what} must be {{word_count_type}} {{word_count}} words long."
_CN_REQUIREMENT = "\n\n[要求]你的{what}字数必须{{word_count_type}} {{word_count}}字。"

# (category, type, lang, instruction, raw_data, what the requirement refers to)
_LIFEBENCH = [
    (
        "create",
        "Story Continuation",
        "en",
        "Continue this opening of a short story:",
        "The lighthouse keeper found a second staircase that had not been there the night before.",
        "The continuation",
    ),
    (
        "create",
        "Poem Writing",
        "en",
        "Write a poem inspired by this image:",
        "A bicycle left leaning against a snowed-in mailbox.",
        "The poem",
    ),
    (
        "create",
        "Letter Writing",
        "en",
        "Write a letter based on this situation:",
        "A retired baker thanks the neighbour who kept her sourdough starter alive for a year.",
        "The letter",
    ),
    (
        "qa",
        "Explanation",
        "en",
        "Answer the following question:",
        "Why does a metal spoon feel colder than a wooden one at the same temperature?",
        "Your answer",
    ),
    (
        "qa",
        "Advice",
        "en",
        "Answer the following question:",
        "How should a beginner plan a first week of learning to touch-type?",
        "Your answer",
    ),
    (
        "reasoning",
        "Logical Puzzle",
        "en",
        "Reason through this puzzle step by step:",
        "Three boxes are labelled apples, oranges and mixed, and every label is wrong. You may draw one fruit "
        "from one box. How do you relabel them?",
        "Your reasoning",
    ),
    (
        "reasoning",
        "Estimation",
        "en",
        "Estimate the answer and explain your reasoning:",
        "Roughly how many times does a human heart beat in one year?",
        "Your reasoning",
    ),
    (
        "summarization",
        "News Summary",
        "en",
        "Summarize this passage:",
        "The town council voted to turn the old rail yard into a public park with a community garden.",
        "The summary",
    ),
    ("create", "Story Continuation", "cn", "续写下面的故事开头：", "雨夜里，一只橘猫敲响了书店的门。", "续写"),
    ("qa", "Explanation", "cn", "回答下面的问题：", "为什么秋天树叶会变黄？", "回答"),
    ("reasoning", "Arithmetic", "cn", "请一步一步推理：", "一本书有 120 页，小明每天读 15 页，几天读完？", "推理"),
]


def lifebench_rows() -> list[dict]:
    rows = []
    for i, (category, kind, lang, instruction, raw, what) in enumerate(_LIFEBENCH, start=1):
        if lang == "en":
            task = f"[Instruction] {instruction} \n {raw}" + _EN_REQUIREMENT.format(what=what)
        else:
            task = f"[指令] {instruction} \n {raw}" + _CN_REQUIREMENT.format(what=what)
        rows.append({"id": 900 + i, "category": category, "type": kind, "lang": lang, "task": task, "raw_data": raw})
    return rows


def gsm8k_rows() -> list[dict]:
    return [
        {
            "question": "A baker fills 7 trays with 12 rolls each and sells all but 5 rolls. How many rolls does "
            "she sell?",
            "answer": "She bakes 7 * 12 = <<7*12=84>>84 rolls.\nShe sells 84 - 5 = <<84-5=79>>79 rolls.\n#### 79",
        },
        {
            "question": "Tom reads 18 pages a day. How many days does he need for a 126-page book?",
            "answer": "He needs 126 / 18 = <<126/18=7>>7 days.\n#### 7",
        },
        {
            "question": "A ticket costs $4 for children and $9 for adults. What do 3 children and 2 adults pay?",
            "answer": "Children pay 3 * 4 = $<<3*4=12>>12.\nAdults pay 2 * 9 = $<<2*9=18>>18.\n"
            "Together they pay 12 + 18 = $<<12+18=30>>30.\n#### 30",
        },
        {
            "question": "A garden has 5 rows of 8 tulips. A third of 45 daffodils are planted too. How many flowers "
            "are planted?",
            "answer": "There are 5 * 8 = <<5*8=40>>40 tulips.\nA third of the daffodils is 45 / 3 = <<45/3=15>>15.\n"
            "In all 40 + 15 = <<40+15=55>>55 flowers.\n#### 55",
        },
        {
            "question": "Maria had 1,250 stamps and gave away 16 percent of them. How many does she keep?",
            "answer": "She gives away 1250 * 0.16 = <<1250*0.16=200>>200 stamps.\n"
            "She keeps 1250 - 200 = <<1250-200=1050>>1,050 stamps.\n#### 1050",
        },
        {
            "question": "A train travels 60 km in 45 minutes. At that speed, how many km does it travel in 3 hours?",
            "answer": "In one hour it travels 60 / 45 * 60 = <<60/45*60=80>>80 km.\n"
            "In 3 hours it travels 3 * 80 = <<3*80=240>>240 km.\n#### 240",
        },
    ]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
