"""The `mixed` task (its split and strict checkers), tasks by name, and ShorterBetter's reward."""

import pytest

from lenvm_rl.rl import rewards
from lenvm_rl.rl.tasks import (
    MIXED_KINDS,
    OPPOSITES,
    counted_run,
    mixed_check,
    mixed_dataset,
    mixed_reward,
    mixed_split,
    opposites_split,
    task_reward,
)


def test_split_is_fixed_balanced_and_held_out():
    a, b = mixed_split(), mixed_split()
    assert a == b
    _, eval_words = opposites_split()
    for split in ("train", "validation", "eval"):
        kinds = [r["kind"] for r in a[split]]
        assert {k: kinds.count(k) for k in MIXED_KINDS} == {
            "train": {"one": 74, "count": 74},
            "validation": {"one": 32, "count": 32},
            "eval": {"one": 48, "count": 36},
        }[split]
    words = {s: {w for r in a[s] for w in r["words"]} for s in a}
    assert words["eval"] <= set(eval_words)
    assert not words["train"] & words["eval"] and not words["validation"] & (words["train"] | words["eval"])
    counts = {s: {r["prompt"][0]["content"] for r in a[s] if r["kind"] == "count"} for s in a}
    assert len(counts["eval"]) == 36 and not counts["train"] & counts["eval"]
    assert not counts["validation"] & (counts["train"] | counts["eval"])
    sizes = [r["stop"] - r["start"] + 1 for s in a for r in a[s] if r["kind"] == "count"]
    assert (
        min(sizes) == 10 and max(sizes) == 30 and {r["start"] for s in a for r in a[s] if r["kind"] == "count"} == {1}
    )
    assert mixed_dataset(a["eval"]).num_rows == len(a["eval"])


@pytest.mark.parametrize(
    "text, ok",
    [
        ("3, 4, 5, 6", True),
        ("Here are the numbers from 3 to 6: 3, 4, 5, 6.", True),
        ("1. 3\n2. 4\n3. 5\n4. 6", True),  # list markers are not part of the count
        ("3, 4, 5, 6, 7", False),  # went past the end
        ("3, 4, 6", False),
        ("3, 4, 5", False),
        ("3, 4, 5, 7, 3, 4, 5, 6", False),  # the first count is read, not a later fix
        ("The numbers 3 to 6 are...", False),
    ],
)
def test_count_checker_is_strict(text, ok):
    assert counted_run(text, 3, 6)[0] is ok


def test_one_word_checker_and_answer_end():
    hot = [OPPOSITES["hot"].split()]
    assert mixed_check("Cold.", "one", ["hot"], hot)[0]
    assert mixed_check("The opposite of hot is cold. Hot means...", "one", ["hot"], hot) == (True, 28)
    assert not mixed_check("Warm, or cold.", "one", ["hot"], hot)[0]
    assert counted_run("1, 2, 3 and more", 1, 3) == (True, 7)


def test_mixed_reward_reads_each_kind():
    rows = [r for r in mixed_split()["validation"]]
    one = next(r for r in rows if r["kind"] == "one")
    count = next(r for r in rows if r["kind"] == "count")
    right = [OPPOSITES[one["words"][0]].split()[0], ", ".join(map(str, range(count["start"], count["stop"] + 1)))]
    cols = {k: [one[k], count[k]] for k in ("kind", "words", "answer", "start", "stop")}
    assert mixed_reward(right, **cols) == [1.0, 1.0]
    assert mixed_reward(["no idea", "1, 2"], **cols) == [0.0, 0.0]
    assert mixed_reward([[{"role": "assistant", "content": right[0]}], "x"], **cols) == [1.0, 0.0]


def test_unknown_task_name_is_a_clear_error():
    assert task_reward("mixed") is mixed_reward
    with pytest.raises(ValueError, match="unknown task 'mixd'; the tasks are"):
        task_reward("mixd")


def _gate(completions, **kwargs):
    return [1.0 if "yes" in c else 0.0 for c in completions]


def test_shorter_better_pulls_every_answer_to_the_shortest_correct_length():
    reward = rewards.get_shorter_better_reward(_gate, beta=0.1)
    prompts = ["p"] * 4 + ["q"] * 2
    completions = ["yes", "no", "yes", "no", "no", "no"]
    ids = [[1] * 5, [1] * 2, [1] * 9, [1] * 8, [1] * 3, [1] * 7]
    out = reward(prompts=prompts, completions=completions, completion_ids=ids)
    # Group p: the shortest correct answer has 5 tokens (the shorter wrong one is not the target).
    # Group q: nobody is right, so the target is the mean length, 5.
    assert out == pytest.approx([0.0, -0.3, -0.4, -0.3, -0.2, -0.2])
    assert reward.__name__ == "shorter_better_reward"
    with pytest.raises(ValueError, match="beta must be positive"):
        rewards.get_shorter_better_reward(_gate, beta=0.0)


def _shorter_better_two_ranks(rank, path):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}.init", rank=rank, world_size=2)
    reward = rewards.get_shorter_better_reward(_gate, beta=1.0)
    lengths, said = [[6, 4], [2, 8]][rank], [["yes", "yes"], ["no", "yes"]][rank]
    out = reward(prompts=["p", "p"], completions=said, completion_ids=[[1] * n for n in lengths])
    with open(f"{path}.{rank}", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


@pytest.mark.slow  # over 2 s on the 2 cores
def test_shorter_better_sees_whole_groups_across_processes(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_shorter_better_two_ranks, args=(str(tmp_path / "sb"),), nprocs=2)
    out = [x for rank in (0, 1) for x in json.loads((tmp_path / f"sb.{rank}").read_text())]
    assert out == pytest.approx([-2.0, 0.0, -2.0, -4.0])  # the shortest correct answer (4 tokens) is on rank 0
