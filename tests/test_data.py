import pytest

from lenvm_rl.data import (
    IGNORE_INDEX,
    ChatTemplateError,
    LengthValueCollator,
    build_example,
    build_examples,
    encode_prompt,
    load_rollouts,
    split_by_prompt,
)
from tests.conftest import make_records, write_jsonl


def test_labels_count_remaining_tokens_from_last_prompt_token_through_eos():
    ex = build_example([10, 11, 12], [20, 21, 2], max_length=None)
    assert ex["input_ids"] == [10, 11, 12, 20, 21, 2]
    assert ex["labels"] == [IGNORE_INDEX, IGNORE_INDEX, 3, 2, 1, 0]  # s_0 on the last prompt token, EOS -> 0
    assert ex["completion_length"] == 3


def test_long_prompt_loses_left_tokens_but_targets_stay_exact():
    ex = build_example(list(range(100, 120)), [20, 21, 2], max_length=10)
    assert len(ex["input_ids"]) == 10 and ex["input_ids"][-3:] == [20, 21, 2]
    assert [x for x in ex["labels"] if x != IGNORE_INDEX] == [3, 2, 1, 0]


def test_long_completion_keeps_its_head_with_true_remaining_counts():
    completion = list(range(200, 230)) + [2]  # L = 31
    ex = build_example([10, 11, 12, 13], completion, max_length=12)
    assert len(ex["input_ids"]) == 12
    kept = [x for x in ex["labels"] if x != IGNORE_INDEX]
    assert kept[0] == 31 and kept == list(range(31, 31 - len(kept), -1))  # no target shifted by the cut
    assert 0 not in kept  # the EOS was cut off, so no fake terminal state


def test_truncated_rollouts_are_dropped_and_counted(tokenizer):
    records = make_records(tokenizer, n=30, truncated_every=3)
    examples, stats = build_examples(records, tokenizer, truncated="drop")
    assert stats.dropped_truncated == 10 and stats.examples == 20 == len(examples) and stats.censored == 0
    assert "dropped 10 truncated" in stats.summary()
    for ex, rec in zip(examples, [r for r in records if r["finish_reason"] == "stop"]):
        assert ex["input_ids"][-1] == tokenizer.eos_token_id
        assert ex["completion_length"] == len(rec["completion_ids"])
        assert "lower_bounds" not in ex  # the old layout


def test_truncated_rollouts_are_kept_as_censored_by_default(tokenizer):
    records = make_records(tokenizer, n=30, truncated_every=3)
    examples, stats = build_examples(records, tokenizer)
    assert stats.censored == 10 and stats.dropped_truncated == 0 and stats.examples == 30 == len(examples)
    assert "kept 10 truncated as censored" in stats.summary() and stats.truncated_share == pytest.approx(1 / 3)
    for ex, rec in zip(examples, records):
        k = len(rec["completion_ids"])
        assert ex["censored"] == (rec["finish_reason"] == "length") and ex["completion_length"] == k
        assert len(ex["lower_bounds"]) == len(ex["labels"]) == len(ex["input_ids"])
        if ex["censored"]:  # no exact target anywhere; bounds count the k tokens seen after each state plus the EOS
            assert set(ex["labels"]) == {IGNORE_INDEX} and ex["input_ids"][-1] != tokenizer.eos_token_id
            assert [b for b in ex["lower_bounds"] if b != IGNORE_INDEX] == list(range(k + 1, 0, -1))
        else:
            assert set(ex["lower_bounds"]) == {IGNORE_INDEX}
            assert [x for x in ex["labels"] if x != IGNORE_INDEX] == list(range(k, -1, -1))
    batch = LengthValueCollator(tokenizer.pad_token_id)(examples[:4])
    assert batch["lower_bounds"].shape == batch["labels"].shape
    assert ((batch["lower_bounds"] != IGNORE_INDEX) & (batch["labels"] != IGNORE_INDEX)).sum() == 0
    with pytest.raises(ValueError, match="truncated must be"):
        build_examples(records, tokenizer, truncated="keep")


def test_censored_bounds_survive_a_max_length_cut():
    ex = build_example(list(range(100, 104)), list(range(200, 230)), max_length=12, censored=True)  # k = 30, cut
    kept = [b for b in ex["lower_bounds"] if b != IGNORE_INDEX]
    assert len(ex["input_ids"]) == 12 and kept[0] == 31 and kept == list(range(31, 31 - len(kept), -1))


def test_all_truncated_is_a_clear_error(tokenizer):
    records = make_records(tokenizer, n=5, truncated_every=1)
    with pytest.raises(ValueError, match="All 5 completions were truncated"):
        build_examples(records, tokenizer)


def test_bad_rollout_files(tmp_path, tokenizer):
    good = make_records(tokenizer, n=3)
    missing = dict(good[0])
    del missing["finish_reason"]
    with pytest.raises(ValueError, match="lacks the fields"):
        load_rollouts(write_jsonl(tmp_path / "a.jsonl", [good[1], missing]))
    empty = dict(good[0], completion_ids=[], completion="")
    with pytest.raises(ValueError, match="empty completion"):
        load_rollouts(write_jsonl(tmp_path / "b.jsonl", [empty]))
    (tmp_path / "c.jsonl").write_text("")
    with pytest.raises(ValueError, match="no rollout records"):
        load_rollouts(tmp_path / "c.jsonl")
    with pytest.raises(FileNotFoundError, match="lenvm rollouts"):
        load_rollouts(tmp_path / "nope.jsonl")


def test_other_generator_vocab_is_retokenized(tokenizer):
    rec = make_records(tokenizer, n=1)[0]
    foreign = dict(rec, completion="Hello there, friend.", completion_ids=[999999, 5, 2])  # ids from another vocab
    examples, stats = build_examples([foreign], tokenizer)
    expected = tokenizer("Hello there, friend.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert stats.retokenized == 1 and examples[0]["input_ids"][-len(expected) :] == expected


def test_missing_chat_template_errors_unless_plain_text_is_chosen(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        encode_prompt(tok, "hi")
    assert encode_prompt(tok, "hi", use_chat_template=False) == tok("hi\n")["input_ids"]
    chat = encode_prompt(tokenizer, "hi")
    assert tokenizer.decode(chat).endswith("<|im_start|>assistant\n")


def test_collator_right_pads():
    batch = LengthValueCollator(pad_token_id=7)(
        [{"input_ids": [1, 2, 3], "labels": [-100, 1, 0]}, {"input_ids": [4], "labels": [0]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 1, 0], [0, -100, -100]]


def test_split_holds_out_whole_prompts(tokenizer):
    records = make_records(tokenizer, n=36)
    train, held = split_by_prompt(records, 0.34, seed=1)
    assert {r["prompt_id"] for r in train}.isdisjoint({r["prompt_id"] for r in held})
    assert len(train) + len(held) == 36 and held
