"""evals/experiments/guided_quality.py: the five arms with and without the trust region, stage 1's epsilon, resuming
from the cells file, the fresh LIFEBench draw and the goal (tiny random generator and critic, --tiny)."""

import json

import pytest
import torch

from evals.experiments import guided_quality as gq


@pytest.fixture(scope="module")
def tiny_critic(tmp_path_factory, tiny_causal_dir, tokenizer):
    from lenvm_rl.modeling import LengthValueModel

    path = tmp_path_factory.mktemp("gq") / "model"
    torch.manual_seed(0)
    LengthValueModel.from_backbone(str(tiny_causal_dir), gamma=0.95).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _argv(critic, generator, data, out, validation, *extra):
    return [
        "--tiny",
        "--critic",
        str(critic),
        "--generator",
        str(generator),
        "--data",
        str(data),
        "--validation_prompts",
        str(validation),
        "--output_dir",
        str(out),
        *extra,
    ]


@pytest.mark.slow  # an experiment script, tiny
def test_tiny_run_covers_every_arm_and_resumes(tiny_critic, tiny_causal_dir, lifebench_file, tmp_path):
    validation = tmp_path / "val.txt"
    validation.write_text("Name a fruit.\nSay hello.\nCount to three.\n")
    out = tmp_path / "out"
    result = gq.main(_argv(tiny_critic, tiny_causal_dir, lifebench_file, out, validation))
    variants = ["plain", "prompt_only"] + [f"{arm}/{tr}" for arm in gq.GUIDED for tr in ("tr_off", "tr_on")]
    for source in ("lifebench", "everyday"):
        for mode in gq.MODES:
            cells = [c for c in result["summary"] if (c["source"], c["mode"]) == (source, mode)]
            assert [c["variant"] for c in cells] == variants
            assert all(c["n"] == 2 and c["target"] == 6 for c in cells)
    assert result["epsilon"] == 0.1 and {c["arm"] for c in result["validation"]} == {
        "plain",
        "prompt_only",
        "prompt_lenvm",
    }
    assert set(result["goal"]) == {"lifebench", "everyday"} and len(result["goal"]["lifebench"]["tr_on"]["checks"]) == 2
    assert set(result["examples"]) == set(variants) and all(len(v) == 2 for v in result["examples"].values())
    cells = [json.loads(line) for line in (out / "guided_quality_cells.jsonl").read_text().splitlines()]
    rows = {(c["source"], c["variant"]): c["rows"] for c in cells}
    budget = "6 tokens (roughly 4 words)."  # every mode's template
    # LIFEBench's own length sentence is gone; the budget reaches the prompt arms only (in the answer rows' prompts)
    assert all("{word_count" not in r["prompt"] and "must be" not in r["prompt"] for r in rows["lifebench", "plain"])
    for (source, name), rs in rows.items():  # the prompt as each arm saw it: the budget for the prompt arms only
        assert all((budget in r["prompt"]) == name.startswith("prompt") for r in rs), (source, name)
    for r in rows["everyday", "lenvm/tr_on"] + rows["everyday", "rules_only/tr_off"]:
        if r["mode"] == "at_most":
            assert r["num_tokens"] <= 6  # the hard stop stands outside the trust region
    md = (out / "guided_quality.md").read_text()
    assert "Ten answers per arm" in md and "Goal on lifebench, trust region tr_on" in md
    # a rerun resumes: every cell comes from the cells file, nothing is generated again
    again = gq.main(_argv(tiny_critic, tiny_causal_dir, lifebench_file, out, validation))
    assert (out / "guided_quality_cells.jsonl").read_text().splitlines() == [json.dumps(c) for c in cells]
    assert again["summary"] == result["summary"]


@pytest.mark.slow  # four worker processes, tiny
def test_two_workers_write_each_cell_once_and_match_one_process(
    tiny_critic, tiny_causal_dir, lifebench_file, tmp_path, monkeypatch
):
    from pathlib import Path

    monkeypatch.chdir(Path(gq.__file__).resolve().parents[2])  # the workers run `python -m evals.experiments...`
    validation = tmp_path / "val.txt"
    validation.write_text("Name a fruit.\nSay hello.\nCount to three.\n")
    (tmp_path / "w" / "claims").mkdir(parents=True)
    (tmp_path / "w" / "claims" / "stale.claim").touch()  # left by a killed run: cleared, not obeyed
    workers = gq.main(_argv(tiny_critic, tiny_causal_dir, lifebench_file, tmp_path / "w", validation, "--workers", "2"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' arithmetic: a 2-thread matmul may round the last bit differently
    try:
        one = gq.main(_argv(tiny_critic, tiny_causal_dir, lifebench_file, tmp_path / "one", validation))
    finally:
        torch.set_num_threads(threads)
    cells = [json.loads(line) for line in (tmp_path / "w" / "guided_quality_cells.jsonl").read_text().splitlines()]
    keys = [c["key"] for c in cells]
    assert len(keys) == len(set(keys))  # no cell generated twice
    single = [json.loads(line) for line in (tmp_path / "one" / "guided_quality_cells.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(c["key"] for c in single)
    answers = {c["key"]: [(r["token_ids"], r["end"]) for r in c["rows"]] for c in single}
    assert all([(r["token_ids"], r["end"]) for r in c["rows"]] == answers[c["key"]] for c in cells)  # same answers
    assert workers["epsilon"] == one["epsilon"]
    assert [c["variant"] for c in workers["summary"]] == [c["variant"] for c in one["summary"]]
    for w, o in zip(workers["summary"], one["summary"]):
        assert w.keys() == o.keys()
        for k in w:
            numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (w[k], o[k]))
            assert w[k] == (pytest.approx(o[k], rel=1e-4, nan_ok=True) if numbers else o[k]), k
    assert not (tmp_path / "w" / "claims" / "stale.claim").exists()


def test_a_torn_last_line_costs_only_its_own_cell(tmp_path):
    cells = tmp_path / "cells.jsonl"
    gq.append_cell(cells, {"key": "a", "rows": []})
    with cells.open("a") as f:
        f.write('{"key": "b", "ro')  # a worker killed mid-write
    gq.append_cell(cells, {"key": "c", "rows": []})
    assert sorted(gq.load_cells(cells)) == ["a", "c"]


def test_length_sentence_removed_from_lifebench_tasks(lifebench_file):
    from lenvm_rl.evaluation.lifebench import load_tasks

    for t in load_tasks(str(lifebench_file), {"en"}):
        text = gq.without_length_sentence(t["task"])
        assert "{word_count" not in text and "[Requirement]" not in text and text.strip()
    real = (
        "[Instruction] Answer this question: \n How do I lose weight? \n\n[Requirement] Your answer must be "
        "{word_count_type} {word_count} words long."
    )
    assert gq.without_length_sentence(real) == "[Instruction] Answer this question: \n How do I lose weight?"
    story = "x\n\n[Requirement] Expand on this story, The expanded version must be {word_count_type} {word_count} words long."
    assert gq.without_length_sentence(story) == "x\n\n[Requirement] Expand on this story."


def test_earlier_draws_are_left_out_and_too_few_is_an_error(tmp_path, lifebench_file, monkeypatch):
    results = tmp_path / "results"
    (results / "old").mkdir(parents=True)
    (results / "old" / "tasks.json").write_text(json.dumps({"rows": [{"uid": "en:901"}, {"uid": "en:902"}]}))
    monkeypatch.setattr(gq, "RESULTS", results)
    found = gq.used_task_uids(results, [], [])
    assert found == {str(results / "old" / "tasks.json"): {"en:901", "en:902"}}
    assert gq.used_task_uids(results, [], [str(results / "old" / "tasks.json")]) == {}  # readmitted
    # a later run on the same draw plus one other task: the draw's tasks are readmitted there too, the other is not
    (results / "later.jsonl").write_text('{"uid": "en:901"}\n{"uid": "en:903"}\n')
    found = gq.used_task_uids(results, [], [str(results / "old" / "tasks.json")])
    assert found == {str(results / "later.jsonl"): {"en:903"}}
    with pytest.raises(FileNotFoundError, match="allow_draws"):
        gq.used_task_uids(results, [], [str(results / "missing.json")])
    a = gq.parse(["--data", str(lifebench_file), "--rows_per_cell", "1", "--epsilon", "0.1"])
    drawn = gq.lifebench_draw(a)
    assert drawn and not {t["uid"] for t in drawn} & {"en:901", "en:902"}
    a = gq.parse(["--data", str(lifebench_file), "--rows_per_cell", "999", "--epsilon", "0.1"])
    with pytest.raises(ValueError, match="fresh"):
        gq.lifebench_draw(a)


def test_stage_one_reads_the_critics_heldout_rollouts_once_per_prompt(tmp_path):
    rows = [
        {
            "prompt_id": pid,
            "prompt": [{"role": "user", "content": text}],
            "completion": "x",
            "completion_ids": [1],
            "finish_reason": "stop",
            "sample_idx": i,
        }
        for pid, text in (("a", "Describe the sea."), ("b", "Name a fruit."))
        for i in range(4)  # several answers per prompt, as the quickstart samples them
    ]
    (tmp_path / "model").mkdir()
    (tmp_path / "rollouts_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = gq.parse(["--critic", str(tmp_path / "model"), "--epsilon", "0.1"])
    assert [t["text"] for t in gq.validation_prompts(a)] == ["Describe the sea.", "Name a fruit."]


def test_epsilon_choice_and_goal_by_hand():
    def cell(eps, ls, gap, deg):
        return {"arm": "prompt_lenvm", "epsilon": eps, "ls": ls, "nll_gap_to_plain": gap, "degenerate_rate": deg}

    cells = [cell(0.1, 70, 0.05, 0.0), cell(0.3, 80, 0.08, 0.02), cell(1.0, 95, 0.2, 0.0)]
    assert gq.choose_epsilon(cells, [0.1, 0.3, 1.0])[0] == 0.3  # 1.0 scores more but breaks the NLL bound
    assert gq.choose_epsilon([cell(0.1, 70, 0.3, 0.0), cell(0.3, 80, 0.2, 0.0)], [0.1, 0.3])[0] == 0.3  # least gap

    def summary(variant, ls, natural, gap=0.05, deg=0.0):
        return {
            "source": "lifebench",
            "mode": "equal",
            "target": 32,
            "variant": variant,
            "ls": ls,
            "natural_end_rate": natural,
            "nll_gap_to_plain": gap,
            "degenerate_rate": deg,
        }

    base = [summary("prompt_only", 60, 0.5), summary("lenvm/tr_off", 70, 0.4), summary("lenvm/tr_on", 70, 0.4)]
    g = gq.goal([*base, summary("prompt_lenvm/tr_off", 71, 0.6), summary("prompt_lenvm/tr_on", 69, 0.6)], "lifebench")
    assert g["tr_off"]["met"] and not g["tr_on"]["met"]  # +11 LS met; +9 not
    g = gq.goal([*base, summary("prompt_lenvm/tr_off", 75, 0.5)], "lifebench")
    assert not g["tr_off"]["met"]  # natural ends not above prompt only's


@pytest.mark.parametrize(
    "flags, match",
    [(["--epsilons", "0.1,0"], "trust_region"), (["--modes", "at_least"], "--modes"), (["--targets", "0"], "targets")],
)
def test_bad_input_is_refused_before_any_model_loads(flags, match):
    with pytest.raises(ValueError, match=match):
        gq.parse(flags)
