"""The evaluations of `lenvm eval`: their metrics by hand, and each one end to end in its --tiny mode."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import make_records, shared_data_file, write_jsonl

from evals import tradeoff_goals
from lenvm_rl.ends import NATURAL_EOS_MIN_PROB
from lenvm_rl.evaluation import lifebench, tradeoff
from lenvm_rl.evaluation.length_prediction import (
    fit_bucket_classifier,
    fit_prompt_length_regression,
)


# ------------------------------------------------------------------------------------------ metrics by hand
def test_lifebench_length_score_follows_the_benchmark():
    assert lifebench.length_deviation(48, 64) == -0.25
    assert lifebench.length_score(-0.25, "equal") == pytest.approx(100 * math.exp(-1.25))
    assert lifebench.length_score(0.5, "equal") == pytest.approx(100 * math.exp(-1.0))
    assert lifebench.length_score(-0.25, "at_most") == 100.0  # shorter is fine under a maximum
    assert lifebench.length_score(0.5, "at_least") == 100.0  # longer is fine above a minimum
    assert lifebench.length_score(0.5, "at_most") == pytest.approx(100 * math.exp(-1.0))
    assert lifebench.length_score(-0.5, "at_least") == pytest.approx(100 * math.exp(-2.5))
    assert lifebench.length_score(0.0, "equal") == 100.0


def test_lifebench_averages_per_target_first():
    rows = [
        {"target": 32, "ls": 100.0, "ld": 0.0, "num_tokens": 32, "finished": True},
        {"target": 32, "ls": 0.0, "ld": -1.0, "num_tokens": 0, "finished": True},
        {"target": 64, "ls": 100.0, "ld": 0.0, "num_tokens": 64, "finished": True},
    ]
    agg = lifebench.aggregate(rows)
    assert agg["by_target"][32]["ls"] == 50.0 and agg["ls"] == 75.0  # not the row mean 66.7
    assert agg["abs_ld"] == 0.25


def test_lifebench_token_prompt_and_local_file(lifebench_file):
    tasks = lifebench.load_tasks(str(lifebench_file), {"en"})
    assert tasks and all(t["lang"] == "en" for t in tasks)
    assert "summarization" not in {t["category"] for t in tasks}
    few = lifebench.load_tasks(str(lifebench_file), {"en"}, per_category=2)
    assert sorted(t["category"] for t in few) == ["create", "create", "qa", "qa", "reasoning", "reasoning"]
    text = lifebench.token_prompt(tasks[0]["task"], "en", "at_most", 64)
    assert "at most 64 tokens" in text and "{word_count" not in text and "64 words" not in text
    cn = lifebench.token_prompt("[要求]你的回答字数必须{word_count_type} {word_count}字。", "cn", "at_least", 32)
    assert cn.endswith("至少 32个token。")


def test_lifebench_real_files_load():
    """The real LIFEBench files (CI has them beside the repo): both languages, all three categories."""
    for name, per_lang in (("data_lite_no_summary.jsonl", None), ("data_no_summary.jsonl", 160)):
        path = shared_data_file("lifebench", name)
        for lang in ("en", "cn"):
            tasks = lifebench.load_tasks(str(path), {lang})
            assert {t["category"] for t in tasks} == {"create", "qa", "reasoning"}
            assert per_lang is None or len(tasks) == per_lang
            few = lifebench.load_tasks(str(path), {lang}, per_category=2)
            assert sorted(t["category"] for t in few) == ["create", "create", "qa", "qa", "reasoning", "reasoning"]
            text = lifebench.token_prompt(tasks[0]["task"], lang, "equal", 128)
            assert "{word_count" not in text and "128" in text


def test_lifebench_refuses_a_critic_trained_on_its_prompts(tmp_path, lifebench_file):
    tasks = lifebench.load_tasks(str(lifebench_file), {"en"})
    (tmp_path / "model").mkdir()
    leaked = {"prompt_id": "x", "prompt": lifebench.token_prompt(tasks[3]["task"], "en", "equal", 128)}
    write_jsonl(tmp_path / "rollouts_train.jsonl", [leaked])
    with pytest.raises(ValueError, match="trained on LIFEBench"):
        lifebench.check_not_trained_on(str(tmp_path / "model"), tasks)


def test_prompt_length_regression_recovers_a_line():
    predict, info = fit_prompt_length_regression([10, 20, 30, 40], [25, 45, 65, 85])
    assert info["slope"] == pytest.approx(2.0) and info["intercept"] == pytest.approx(5.0)
    assert predict(50) == pytest.approx(105.0) and predict(-100) == 1.0


def test_bucket_classifier_learns_separable_prompts():
    torch.manual_seed(0)
    lengths = [5] * 20 + [200] * 20
    feats = torch.cat([torch.randn(20, 8) - 3, torch.randn(20, 8) + 3])
    predict, info = fit_bucket_classifier(feats, lengths, gamma=0.99, n_buckets=2)
    assert info["train_accuracy"] == 1.0
    assert predict(torch.full((1, 8), -3.0)) == [pytest.approx(5.0)]
    assert predict(torch.full((1, 8), 3.0)) == [pytest.approx(200.0)]


def test_tradeoff_counts_answers_over_the_budget_as_wrong():
    rows = [{"answer": "7"}, {"answer": "9"}, {"answer": "3"}]
    outs = [
        {"text": "7", "num_tokens": 2, "finished": True},
        {"text": "9 is the sum, because", "num_tokens": 12, "finished": True},
        {"text": "3 and on and on", "num_tokens": 16, "finished": False},
    ]
    from lenvm_rl.rl.tasks import addition_reward

    s = tradeoff.score(outs, rows, addition_reward, budget=8)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["mean_tokens"] == pytest.approx((2 + 8 + 8) / 3)
    assert s["over_budget"] == pytest.approx(2 / 3)
    assert s["ends"] == {"natural": 1, "forced": 0, "cap": 2}  # the 12-token answer finished, but past the budget
    s = tradeoff.score(outs, rows, addition_reward, budget=16)
    assert s["accuracy"] == pytest.approx(2 / 3)  # the unfinished one is cut, so wrong
    ruled = outs[:2] + [{"text": "3", "num_tokens": 6, "finished": False, "end": "forced"}]
    s = tradeoff.score(ruled, rows, addition_reward, budget=16)  # a rule's EOS: not natural, not the cap's
    assert s["ends"] == {"natural": 2, "forced": 1, "cap": 0} and s["accuracy"] == pytest.approx(2 / 3)
    # a tilt's EOS the generator gave less than the natural-end threshold: forced, yet a complete answer scored on
    # its text (the accuracy does not move with the threshold); a hard stop's EOS still counts as cut
    chosen = {"text": "3", "num_tokens": 6, "finished": False, "end": "forced", "rule_forced": False, "p_eos": 0.01}
    s = tradeoff.score(outs[:2] + [chosen], rows, addition_reward, budget=16)
    assert s["ends"] == {"natural": 2, "forced": 1, "cap": 0} and s["accuracy"] == pytest.approx(1.0)
    assert s["p_eos"]["n"] == 1 and s["p_eos"]["median"] == pytest.approx(0.01)
    s = tradeoff.score(outs[:2] + [dict(chosen, rule_forced=True)], rows, addition_reward, budget=16)
    assert s["accuracy"] == pytest.approx(2 / 3)
    curve = [{"mean_tokens": 10.0, "accuracy": 0.2}, {"mean_tokens": 30.0, "accuracy": 0.6}]
    assert tradeoff.accuracy_at(curve, 20.0) == pytest.approx(0.4)


def _point(correct, tokens, **extra):
    return {
        "accuracy": float(np.mean(correct)),
        "mean_tokens": float(np.mean(tokens)),
        "per_answer": {"correct": list(correct), "tokens": list(tokens)},
        **extra,
    }


def test_tradeoff_margins_are_paired_over_prompts():
    """The library's comparison of a tilt point with a curve (the goal that reads it: tests/test_tradeoff_goals.py)."""
    rng = np.random.default_rng(0)
    n, samples = 60, 2
    hard = rng.random(n * samples) < 0.4
    curve = [_point(hard, [10] * (n * samples)), _point(hard, [30] * (n * samples))]
    better = hard.copy()
    better[np.flatnonzero(~hard)[:20]] = True  # right wherever the curve is, and on 20 more answers
    for answers, above in ((better, True), (hard, False)):
        q = _point(answers, [20] * (n * samples), beta=1.0)
        tradeoff.compare(q, {"prompted": curve})
        found, _ = tradeoff.margins(q, {"prompted": curve}, samples)
        assert found["prompted_comparison"] == "same tokens"
        lo, hi = found["margin_vs_prompted_ci95"]
        if above:  # never worse on a prompt: every resample is ahead
            assert found["margin_vs_prompted"] == pytest.approx(20 / (n * samples))
            assert 0 < lo < found["margin_vs_prompted"] < hi
        else:  # identical answers: each resample takes the same prompts from both arms, so exactly 0
            assert found["margin_vs_prompted"] == pytest.approx(0.0) and [lo, hi] == [0.0, 0.0]
    with pytest.raises(ValueError, match="do not split"):
        tradeoff.margins(q, {"prompted": curve}, samples=7)


def test_tradeoff_accuracy_interval_resamples_prompts():
    assert tradeoff.accuracy_interval(_point([1] * 8, [5] * 8), samples=2) == [1.0, 1.0]
    half = _point([1, 1, 0, 0] * 30, [5] * 120)  # prompts alternate: both samples right, both wrong
    lo, hi = tradeoff.accuracy_interval(half, samples=2)
    assert 0.3 < lo < 0.5 < hi < 0.7
    lo1, hi1 = tradeoff.accuracy_interval(half, samples=1)  # read as 120 independent prompts: narrower
    assert hi1 - lo1 < hi - lo


def test_tradeoff_bootstrap_keeps_the_full_samples_end_of_a_flat_curve():
    """Two prompted points at nearly the same tokens swap order in many resamples; the comparison stays with the
    point that is shortest in the full sample, so the draws are the tilt point minus that point, resample by
    resample (re-sorting every resample would pick whichever came out shortest)."""
    rng = np.random.default_rng(1)
    k, samples = 200, 1
    tok_a, tok_b = rng.integers(15, 25, k), rng.integers(15, 25, k)
    tok_a = tok_a - (tok_a.mean() - 19.9)  # a: 19.9 tokens on average, b: 20.0
    tok_b = tok_b - (tok_b.mean() - 20.0)
    a, b = _point(rng.random(k) < 0.2, tok_a), _point(rng.random(k) < 0.5, tok_b)
    q = _point(rng.random(k) < 0.4, [10] * k, beta=1.0)
    draws = tradeoff.bootstrap_margins(q, {"prompted": [b, a]}, samples, n_boot=500)["prompted"]
    idx = np.random.default_rng(0).integers(0, k, size=(500, k))  # the same resamples
    expected = np.asarray(q["per_answer"]["correct"])[idx].mean(1) - np.asarray(a["per_answer"]["correct"])[idx].mean(1)
    assert np.allclose(draws, expected)
    assert (
        np.asarray(b["per_answer"]["tokens"])[idx].mean(1) < np.asarray(tok_a)[idx].mean(1)
    ).any()  # b can be shorter


def test_tradeoff_comparison_outside_a_curve():
    curve = [_point([1, 0], [20, 20]), _point([1, 1], [40, 40])]  # 50 % at 20 tokens, 100 % at 40
    assert tradeoff.comparison(_point([1, 1], [10, 10]), curve) == "dominates its shortest point"
    assert tradeoff.comparison(_point([0, 0], [10, 10]), curve) == "outside its range"  # shorter but worse
    assert tradeoff.comparison(_point([1, 1], [50, 50]), curve) == "outside its range"  # longer: no comparison
    assert tradeoff.comparison(_point([1, 1], [30, 30]), curve) == "same tokens"


def test_opposites_words_file(tmp_path):
    good = tmp_path / "words.jsonl"
    good.write_text('{"word": "calm", "answer": ["Stormy", "agitated"]}\n\n{"word": "raw", "answer": "cooked"}\n')
    rows, reward = tradeoff.task_rows("opposites", str(good), 64, 0)
    assert [(r["word"], r["answer"]) for r in rows] == [("calm", ["stormy", "agitated"]), ("raw", ["cooked"])]
    assert rows[0]["prompt"][-1]["content"] == "What is the opposite of 'calm'?"
    said = [{"text": "The opposite of 'calm' is stormy."}, {"text": "Raw means uncooked."}]
    assert tradeoff.rewards(said, rows, reward) == [1.0, 0.0]
    for text, match in (
        ('{"word": "calm"}', "needs a 'word'"),
        ('{"word": "calm", "answer": ["very stormy"]}', "one word"),
        ('{"word": "calm", "answer": ["stormy"]}\n{"word": "calm", "answer": ["agitated"]}', "twice"),
        ("\n", "no opposites rows"),
    ):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            tradeoff.opposites_words(str(bad))


def test_eval_cli_lists_and_rejects_names(capsys):
    from lenvm_rl.cli import main

    assert main(["eval"]) == 0 and "lifebench" in capsys.readouterr().out
    assert main(["eval", "nope"]) == 2


# ------------------------------------------------------------------------------------------ end to end, --tiny
@pytest.fixture(scope="module")
def quickstart_layout(tmp_path_factory, tiny_causal_dir, tokenizer):
    """A tiny critic in the quickstart layout: model/ beside rollouts_train.jsonl and rollouts_heldout.jsonl."""
    from lenvm_rl.modeling import LengthValueModel

    root = tmp_path_factory.mktemp("qs")
    torch.manual_seed(0)
    LengthValueModel.from_backbone(str(tiny_causal_dir), gamma=0.95).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    write_jsonl(root / "rollouts_train.jsonl", make_records(tokenizer, n=24, seed=1))
    write_jsonl(root / "rollouts_heldout.jsonl", make_records(tokenizer, n=12, seed=2))
    other = [{"prompt_id": "c0", "category": "c", "prompt": "Name a colour."}]  # left out by --categories a,b
    prompts = [{"prompt_id": f"q{i}", "category": "ab"[i % 2], "prompt": f"Tell me about thing {i}."} for i in range(4)]
    write_jsonl(root / "heldout_prompts.jsonl", other + prompts)
    return root


def _run(name, layout, tiny_causal_dir, tmp_path, *extra):
    import importlib

    out = tmp_path / name
    argv = [
        "--tiny",
        "--critic",
        str(layout / "model"),
        "--generator",
        str(tiny_causal_dir),
        "--output-dir",
        str(out),
        *extra,
    ]
    result = importlib.import_module(f"lenvm_rl.evaluation.{name}").main(argv)
    for suffix in ("json", "md", "png"):
        assert (out / f"{name}.{suffix}").stat().st_size > 0, suffix
    assert json.loads((out / f"{name}.json").read_text())["command"].startswith(f"lenvm eval {name}")
    return result, out


@pytest.mark.slow  # a whole evaluation run
def test_length_prediction_tiny(quickstart_layout, tiny_causal_dir, tmp_path):
    result, out = _run(
        "length_prediction",
        quickstart_layout,
        tiny_causal_dir,
        tmp_path,
        "--prompts",
        str(quickstart_layout / "heldout_prompts.jsonl"),
        "--max-new-tokens",
        "48",
        "--buckets",
        "2",
        "--backend",
        "hf_continuous",
        "--categories",
        "a,b",
    )
    records = [json.loads(line) for line in (out / "rollouts_heldout_3.jsonl").read_text().splitlines()]
    assert {r["prompt_id"] for r in records} == {"q0", "q1", "q2", "q3"}  # category c was left out
    by_cat = result["by_category"]
    assert set(by_cat) <= {"a", "b"}
    if len(by_cat) == 2:  # both categories kept prompts with two finished samples
        assert sum(per["LenVM"]["prompts"] for per in by_cat.values()) == result["prompts"]
        assert "MRE by prompt category" in (out / "length_prediction.md").read_text()
    assert 0 <= result["truth_noise_floor_mre"] < 10 and "Noise floor" in (out / "length_prediction.md").read_text()
    names = list(result["predictors"])
    assert names[0] == "LenVM" and "prompt-length regression" in names and "bucket classifier (S3-style)" in names
    for m in result["predictors"].values():
        assert m["prompts"] == result["prompts"] > 0 and m["mre"] >= 0 and m["mae"] >= 0
    assert set(result["online"]) >= {"online_re_0", "online_re_25", "online_re_50", "online_re_75", "value_mse"}


def test_length_prediction_categories_by_hand():
    from lenvm_rl.evaluation.length_prediction import errors_by_category, keep_categories
    from lenvm_rl.metrics import prediction_errors

    prompts = [{"prompt_id": "x", "category": "code"}, {"prompt_id": "y", "category": "list"}, {"prompt_id": "z"}]
    assert [p["prompt_id"] for p in keep_categories(prompts, "code, list")] == ["x", "y"]
    with pytest.raises(ValueError, match=r"no prompt in categories \['essay'\].*'code'"):
        keep_categories(prompts, "essay")
    truth = {"x": 10.0, "y": 100.0, "w": 20.0}
    preds = {"LenVM": {"x": 12.0, "y": 50.0, "w": 20.0}, "mean": {"x": 40.0, "y": 40.0, "w": 40.0}}
    cat = {"x": "code", "y": "list", "w": "code"}
    by_cat = errors_by_category(preds, truth, cat)
    assert by_cat["code"]["LenVM"]["mre"] == pytest.approx((0.2 + 0.0) / 2)
    assert by_cat["list"]["mean"]["mae"] == pytest.approx(60.0) and by_cat["list"]["mean"]["prompts"] == 1
    assert by_cat["code"]["LenVM"] == prediction_errors(preds["LenVM"], {"x": 10.0, "w": 20.0})
    assert errors_by_category(preds, truth, {"x": "code", "y": "code", "w": "code"}) == {}  # one category


def test_online_errors_in_batches_equal_one_batch_of_all_rows(quickstart_layout, tokenizer):
    from transformers import EvalPrediction

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.data import LengthValueCollator, build_dataset
    from lenvm_rl.evaluation.length_prediction import online_errors
    from lenvm_rl.trainer import value_metrics

    critic = LengthCritic.from_pretrained(quickstart_layout / "model")
    ds, _ = build_dataset(make_records(tokenizer, n=11, seed=5, max_len=30), tokenizer, max_length=96, truncated="drop")
    batch = LengthValueCollator(critic._pad_id())([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds])
    with torch.no_grad():
        values = critic.values(batch["input_ids"], batch["attention_mask"]).float().numpy()
    whole = value_metrics(EvalPrediction(predictions=values, label_ids=batch["labels"].numpy()), critic.gamma)
    for size in (1, 4, 64):  # the critic's batches: each row alone, an uneven last batch, one batch
        critic.batch_size = size
        assert online_errors(critic, ds) == pytest.approx(whole, rel=1e-5)


def test_length_prediction_refuses_trained_prompts(quickstart_layout, tiny_causal_dir, tmp_path):
    leaked = tmp_path / "leaked.jsonl"
    write_jsonl(leaked, [{"prompt_id": "p0", "prompt": "Question number 0?"}])
    with pytest.raises(ValueError, match="training rollouts"):
        _run("length_prediction", quickstart_layout, tiny_causal_dir, tmp_path, "--prompts", str(leaked))


@pytest.mark.slow  # a whole evaluation run
def test_lifebench_tiny(quickstart_layout, tiny_causal_dir, tmp_path, lifebench_file, monkeypatch):
    result, out = _run("lifebench", quickstart_layout, tiny_causal_dir, tmp_path, "--data", str(lifebench_file))
    assert (out / "lifebench_quality.png").stat().st_size > 0
    # the guided arms' candidate settings are recorded beside the critic's own rollouts' (the quickstart layout)
    cand = result["candidates"]
    assert (cand["temperature"], cand["top_p"], cand["min_p"]) == (0.7, 0.9, 0.05)
    assert cand["critic_rollout_sampling"] is not None and cand["source"] == "as given"
    arms = ["plain", "truncate", "rules_only", "lenvm", "extreme"]
    n_prompts = 2 + 3  # 2 LIFEBench tasks (--tiny) and the three everyday prompts
    assert result["tasks"] == n_prompts and result["categories"]["user"] == 3
    assert [(c["mode"], c["arm"]) for c in result["summary"]] == [(m, a) for m in lifebench.MODES for a in arms]
    assert len(result["rows"]) == n_prompts * 3 * len(arms)
    for c in result["summary"]:
        assert set(c) == set(lifebench.SUMMARY_KEYS) and c["n"] == n_prompts and c["target"] == 6
        assert c["natural_end_rate"] + c["forced_stop_rate"] + c["capped_rate"] == pytest.approx(1.0)
        assert c["mean_nll"] > 0 and 0.0 <= c["degenerate_rate"] <= 1.0
        long_enough = [
            r for r in result["rows"] if (r["mode"], r["arm"]) == (c["mode"], c["arm"]) and r["num_tokens"] >= 4
        ]
        assert (c["mean_rep4"] is None) == (not long_enough)  # rep-4 needs four tokens
        if long_enough:
            assert 0.0 <= c["mean_rep4"] <= 1.0 and 0.0 <= c["repetitive_rate"] <= 1.0
        if c["arm"] == "plain":
            assert c["nll_gap_to_plain"] == pytest.approx(0.0)
    rows = {(r["mode"], r["arm"], r["uid"]): r for r in result["rows"]}
    for r in result["rows"]:
        assert 0.0 <= r["ls"] <= 100.0 and r["ls"] == pytest.approx(lifebench.length_score(r["ld"], r["mode"]))
        assert r["num_tokens"] <= 2 * r["target"]  # the default cap
        assert r["finished"] == (r["end"] == "natural")  # forced and capped rows are never finished
        cut = r["arm"] == "truncate" and r["end"] == "forced"
        assert (r["p_eos"] is None) == (r["end"] == "cap" or cut)  # every EOS end records the generator's p_eos
        if r["arm"] in lifebench.GUIDED_ARMS and r["end"] == "natural":
            assert r["p_eos"] >= NATURAL_EOS_MIN_PROB and not r["rule_forced"]
        assert r["nll"] is None or r["nll"] > 0
        assert (r["rep4"] is None) == (r["num_tokens"] < 4) and (r["rep4"] is None or 0.0 <= r["rep4"] <= 1.0)
        if r["arm"] in ("lenvm", "rules_only") and r["mode"] == "at_least":
            assert r["num_tokens"] >= r["target"]  # EOS is masked before the target
        if r["arm"] in ("lenvm", "rules_only", "extreme") and r["mode"] == "at_most":
            assert r["num_tokens"] <= r["target"]  # EOS is forced at the target
        if r["arm"] == "truncate":
            plain = rows[r["mode"], "plain", r["uid"]]
            assert r["num_tokens"] == min(plain["num_tokens"], r["target"])
            cut = plain["num_tokens"] > r["target"] or plain["end"] == "cap"
            assert r["end"] == ("forced" if cut else plain["end"])

    # the project's goal verdict is evals' (evals/lifebench_goals.py), read from the summary: not the library's
    assert "goal" not in result and "Goal" not in (out / "lifebench.md").read_text()

    # a rerun resumes: every cell comes from lifebench_cells.jsonl, nothing is generated again
    cells = (out / "lifebench_cells.jsonl").read_text().splitlines()
    assert len(cells) == 3 * len(arms)
    again, _ = _run("lifebench", quickstart_layout, tiny_causal_dir, tmp_path, "--data", str(lifebench_file))
    assert (out / "lifebench_cells.jsonl").read_text().splitlines() == cells
    assert again["summary"] == result["summary"]

    # another folder started from this run's cells (--base_cells): a copy, every cell reused, the source untouched
    other = tmp_path / "other"
    argv = ["--tiny", "--critic", str(quickstart_layout / "model"), "--generator", str(tiny_causal_dir)]
    argv += [
        "--data",
        str(lifebench_file),
        "--output_dir",
        str(other),
        "--base_cells",
        str(out / "lifebench_cells.jsonl"),
    ]
    assert lifebench.main(argv)["summary"] == result["summary"]
    assert (other / "lifebench_cells.jsonl").read_text().splitlines() == cells
    assert (out / "lifebench_cells.jsonl").read_text().splitlines() == cells
    with pytest.raises(FileNotFoundError, match="base_cells"):
        lifebench.main([*argv[:-1], str(tmp_path / "none.jsonl")])

    # a folder that already holds some cells (an earlier run with fewer modes) gets the other run's missing ones
    # appended and reuses them: nothing is generated
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "lifebench_cells.jsonl").write_text(cells[0] + "\n")
    monkeypatch.setattr(lifebench, "in_groups", lambda *a, **k: pytest.fail("a stored cell was generated again"))
    argv[argv.index(str(other))] = str(partial)
    assert lifebench.main(argv)["summary"] == result["summary"]
    assert sorted((partial / "lifebench_cells.jsonl").read_text().splitlines()) == sorted(cells)

    # cells stored before p_eos was recorded (labelled the old way: an EOS among the candidates was natural) get it
    # from one forward over each answer and are relabelled by the threshold, without generating anything
    old = tmp_path / "old"
    old.mkdir()
    with (old / "lifebench_cells.jsonl").open("w") as f:
        for line in cells:
            c = json.loads(line)
            for r in c["rows"]:
                if r["end"] == "forced" and not r["rule_forced"]:  # the threshold's doing: natural by the old rule
                    r["end"], r["finished"] = "natural", True
                del r["p_eos"], r["rule_forced"]
            f.write(json.dumps(c) + "\n")
    argv[argv.index(str(partial))] = str(old)
    argv = [a for a in argv if a not in ("--base_cells", str(out / "lifebench_cells.jsonl"))]
    recounted = lifebench.main(argv)
    for got, want in zip(recounted["summary"], result["summary"]):
        assert {k: v for k, v in got.items() if "p_eos" not in k} == {k: v for k, v in want.items() if "p_eos" not in k}
        for k in ("p_eos_median", "plain_p_eos_median"):
            assert got[k] == (None if want[k] is None else pytest.approx(want[k], rel=1e-3))  # one forward = the steps
    # a stricter threshold reads the same stored answers: no guided end is natural any more, plain keeps its own
    strict = lifebench.main([*argv, "--natural_eos_min_prob", "1.0"])
    for got, want in zip(strict["summary"], result["summary"]):
        if got["arm"] in lifebench.GUIDED_ARMS:
            assert got["natural_end_rate"] == 0.0
            assert got["forced_stop_rate"] == pytest.approx(want["forced_stop_rate"] + want["natural_end_rate"])
        else:
            assert got["natural_end_rate"] == want["natural_end_rate"]


def test_length_groups_keep_long_prompts_from_padding_short_ones():
    from lenvm_rl.evaluation.common import length_groups

    lengths = [60, 62, 70, 80, 400, 500, 1100, 1500]
    groups = length_groups(lengths, batch_size=3, max_batch_tokens=1200)
    assert groups == [(0, 3), (3, 5), (5, 6), (6, 7), (7, 8)]  # 3 rows at most; 2 x 500 > 1200; 1500 alone
    covered = [i for a, b in groups for i in range(a, b)]
    assert covered == list(range(len(lengths)))
    for a, b in groups:
        assert b - a == 1 or (b - a) * lengths[b - 1] <= 1200
    assert length_groups([], 4, 100) == []
    with pytest.raises(ValueError, match="sorted"):
        length_groups([5, 3], 4, 100)


def test_lifebench_cells_without_the_critics_values_survive_a_new_critic(tmp_path):
    tasks = [{"uid": "en:1", "task": "Write."}]
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "value_head.safetensors").write_bytes(b"x")
    key = lambda critic, arm, chat=True: lifebench.settings_key(  # noqa: E731
        lifebench.LifebenchArguments(critic=str(critic)), tasks, arm, chat, "equal"
    )
    for arm in ("plain", "truncate", "rules_only"):
        assert key(a, arm) == key(b, arm)  # another critic: these cells are reused
        assert key(a, arm) != key(a, arm, chat=False)  # another prompt format: not
    for arm in ("lenvm", "extreme"):
        assert key(a, arm) != key(b, arm)
    assert key(a, "rules_only") != key(a, "plain")  # value_tolerance is part of a guided cell's key
    # a cell stored under an older revision of its rule is recomputed, other modes' cells are kept
    cfg = lifebench.LifebenchArguments(critic=str(a))
    for arm in ("lenvm", "rules_only"):
        at_least = lifebench.settings_key(cfg, tasks, arm, True, "at_least")
        assert at_least != key(a, arm) and lifebench.settings_key(cfg, tasks, arm, True, "equal") == key(a, arm)
    assert lifebench.settings_key(cfg, tasks, "plain", True, "at_least") == key(a, "plain")


def test_lifebench_refuses_bad_requests_before_generating(
    quickstart_layout, tiny_causal_dir, tmp_path, lifebench_file, monkeypatch
):
    from lenvm_rl.evaluation import common

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the request was checked")

    monkeypatch.setattr(common, "load_critic", no_models)
    monkeypatch.setattr(common, "load_generator", no_models)
    base = ["--critic", str(quickstart_layout / "model"), "--output_dir", str(tmp_path / "x")]
    with pytest.raises(ValueError, match="unknown arm 'oracle'"):
        lifebench.main(base + ["--data", str(lifebench_file), "--arms", "plain,oracle"])
    with pytest.raises(ValueError, match="exceeds max_new_tokens=64"):
        lifebench.main(base + ["--data", str(lifebench_file), "--targets", "32,128", "--max_new_tokens", "64"])
    not_lifebench = write_jsonl(tmp_path / "other.jsonl", [{"prompt_id": "p", "prompt": "Hello"}])
    with pytest.raises(ValueError, match="lacks LIFEBench's fields"):
        lifebench.main(base + ["--data", str(not_lifebench)])


def test_lifebench_config_file_and_stratified_draw(tmp_path, lifebench_file):
    from trl import TrlParser

    cfg_file = tmp_path / "lb.yaml"
    cfg_file.write_text("targets: 16,32\nrows_per_cell: 4\narms: plain,lenvm\nvalue_tolerance: 0.2\n")
    (cfg,) = TrlParser([lifebench.LifebenchArguments]).parse_args_and_config(
        ["--config", str(cfg_file), "--rows_per_cell", "5", "--tiny"]
    )
    assert cfg.rows_per_cell == 5 and cfg.value_tolerance == 0.2 and cfg.tiny and cfg.data == lifebench.HUB_ID
    data_help = lifebench.LifebenchArguments.__dataclass_fields__["data"].metadata["help"]
    assert "shared" not in lifebench.__doc__ + data_help
    tasks = lifebench.load_tasks(str(lifebench_file), {"en"})  # 7 rows: create 3, qa 2, reasoning 2
    drawn = lifebench.draw_tasks(tasks, 5, seed=0)
    assert len(drawn) == 5 and sorted(Counter(t["category"] for t in drawn).values()) == [1, 2, 2]
    assert drawn == lifebench.draw_tasks(tasks, 5, seed=0) and len(lifebench.draw_tasks(tasks, 99, seed=0)) == 7
    assert any(lifebench.draw_tasks(tasks, 3, seed) != lifebench.draw_tasks(tasks, 3, 0) for seed in range(1, 6))


def test_repeated_ngram_share_by_hand():
    from lenvm_rl.evaluation.common import repeated_ngram_share

    assert repeated_ngram_share([1, 2, 3, 4, 5, 6]) == 0.0  # 3 distinct 4-grams
    # 1 2 3 4 1 2 3 4: 5 four-grams, 4 distinct (1 2 3 4 twice)
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 - 4 / 5)
    assert repeated_ngram_share([7] * 10) == pytest.approx(1 - 1 / 7)  # a loop: one 4-gram seven times
    assert repeated_ngram_share([1, 2, 3]) is None and repeated_ngram_share([1, 2, 1, 2], n=2) == pytest.approx(1 / 3)


def test_lifebench_cell_summary_by_hand():
    def row(uid, nll, end="natural", ld=0.0, ids=(1, 2, 3, 4, 5)):
        return {
            "uid": uid,
            "nll": nll,
            "end": end,
            "ld": ld,
            "ls": lifebench.length_score(ld, "equal"),
            "token_ids": list(ids),
        }

    plain = [row(f"u{i}", float(i)) for i in range(1, 21)]  # NLL 1 .. 20: 95th percentile 19.05; rep-4 all 0
    loop = [9] * 8  # rep-4 1 - 1/5 = 0.8
    arm = [row("u1", 2.0, "forced", -0.5), row("u2", 4.0, "cap", 1.0, loop), row("u3", 30.0), row("u4", None, ids=())]
    c = lifebench.cell_summary(arm, plain, "equal", "lenvm", 16)
    assert c["n"] == 4 and c["natural_end_rate"] == 0.5 and c["forced_stop_rate"] == 0.25 and c["capped_rate"] == 0.25
    assert c["mean_nll"] == pytest.approx(12.0)
    assert c["nll_gap_to_plain"] == pytest.approx((12.0 - 2.0) / 2.0)  # the same prompts u1..u3: plain mean 2
    assert c["degenerate_rate"] == pytest.approx(1 / 3)  # only NLL 30 is above plain's 95th percentile
    # rep-4: u1, u3 0, u2 0.8, u4 none (no tokens); only the loop is above plain's 95th percentile (0)
    assert c["mean_rep4"] == pytest.approx(0.8 / 3) and c["repetitive_rate"] == pytest.approx(1 / 3)
    stored = [dict(r, rep4=0.5) for r in arm[:3]]  # a recorded rep-4 is used as it is
    assert lifebench.cell_summary(stored, plain, "equal", "lenvm", 16)["mean_rep4"] == pytest.approx(0.5)
    assert c["mean_abs_ld"] == pytest.approx(0.375)


def test_answer_nll_matches_the_generators_own_log_probs(tiny_causal_dir):
    from transformers import AutoModelForCausalLM

    from lenvm_rl.evaluation.common import answer_nll

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    prompts, completions = [[5, 6, 7, 8], [9]], [[1001, 1002, 2], [1003, 1004, 1005, 1006]]
    batched = answer_nll(model, prompts, completions, batch_size=2)
    for p, c, got in zip(prompts, completions, batched):  # one row at a time, by hand
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
        expected = -torch.stack([logp[len(p) - 1 + j, tok] for j, tok in enumerate(c)]).mean()
        assert got == pytest.approx(expected.item(), rel=1e-4)
    assert math.isnan(answer_nll(model, [[5]], [[]])[0])


@pytest.mark.slow  # a whole evaluation run
def test_tradeoff_tiny(quickstart_layout, tiny_causal_dir, tmp_path):
    result, _ = _run("tradeoff", quickstart_layout, tiny_causal_dir, tmp_path)
    assert [q["budget"] for q in result["budget"]] == [4, 8] and [q["beta"] for q in result["tilt"]] == [0.0, 2.0]
    assert result["candidates"]["min_p"] == 0.05 and result["candidates"]["temperature"] == 0.7
    for q in result["budget"] + result["tilt"] + result["prompted"]:
        assert 0.0 <= q["accuracy"] <= 1.0 and 0 <= q["mean_tokens"] <= 8
    # Means of min(length, B) can only grow with B.
    assert result["budget"][0]["mean_tokens"] <= result["budget"][1]["mean_tokens"]
    # Forcing at B=4 (the cap, 8, has none): every written token counts, so at least the budget's own tokens.
    (forced,) = result["forcing"]
    assert forced["budget"] == 4 and forced["mean_tokens"] >= result["budget"][0]["mean_tokens"]
    assert [q["asked"] for q in result["prompted"]] == [4]
    assert [q["bonus"] for q in result["eos_bonus"]] == [1.0] and 0 <= result["eos_bonus"][0]["mean_tokens"] <= 8
    assert "eos_bonus_accuracy_at_same_tokens" in result["tilt"][1]
    assert "goal" not in result  # the project's verdict is evals/tradeoff_goals.py's, read from the points
    g = tradeoff_goals.result_goal(result)
    # the EOS-bonus control is read from its own interval and reported, not part of met_with_ci
    lo = g["margin_vs_eos_bonus_ci95"][0]
    assert g["above_eos_bonus_ci"] is (lo > 0 and g["eos_bonus_comparison"] != "outside its range")
    assert "eos_bonus" not in g["ci_checks"] and set(g["ci_checks"]) == {"budget", "forcing", "prompted"}
    for q in result["tilt"]:
        assert {"budget_accuracy_at_same_tokens", "forcing_in_range", "prompted_accuracy_at_same_tokens"} <= set(q)
        # every point carries its paired margins for readers; the verdict reads the same bootstrap
        lo, hi = q["margin_vs_budget_ci95"]
        assert lo <= q["margin_vs_budget"] <= hi
        assert q["margin_vs_budget"] == q["accuracy"] - q["budget_accuracy_at_same_tokens"]
    for q in result["budget"] + result["forcing"] + result["prompted"] + result["eos_bonus"] + result["tilt"]:
        assert len(q["per_answer"]["correct"]) == len(q["per_answer"]["tokens"]) == result["answers"]
        assert sum(q["ends"].values()) == result["answers"]
        assert q["mean_tokens"] == pytest.approx(np.mean(q["per_answer"]["tokens"]))
        assert q["accuracy_ci95"][0] <= q["accuracy_ci95"][1]
    for name in ("forcing", "prompted"):
        lo, hi = g[f"margin_vs_{name}_ci95"]
        assert lo <= g[f"margin_vs_{name}"] + 1e-9 and g[f"margin_vs_{name}"] - 1e-9 <= hi
        # each interval check is what its interval says: above 0 at a comparable point
        assert g["ci_checks"][name] is (lo > 0 and g[f"{name}_comparison"] != "outside its range")
    assert g["ci_checks"]["budget"] is (g["vs_budget_ratio_ci95"][0] >= 3.0)
    assert g["met_with_ci"] is all(g["ci_checks"].values())  # every baseline's interval, the hard budget's included


def test_budget_forcing_keeps_short_answers_and_reads_the_forced_answer(tiny_causal_dir, tokenizer):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from lenvm_rl.rl.tasks import opposites_reward

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    rows = [
        {"prompt": [{"role": "user", "content": f"What is the opposite of '{w}'?"}], "word": w, "answer": [a]}
        for w, a in (("hot", "cold"), ("big", "small"))
    ]
    short = {"text": "Cold.", "token_ids": [1001, 1002], "num_tokens": 2, "end": "natural", "finished": True}
    long = {"text": "x" * 10, "token_ids": list(range(1000, 1010)), "num_tokens": 10, "end": "cap", "finished": False}
    a = SimpleNamespace(seed=0, batch_size=4, use_chat_template=True, temperature=0.7, top_p=0.9)
    cue = tradeoff.CUES["opposites"]
    outs = tradeoff.budget_forced(model, tokenizer, [r["prompt"] for r in rows], rows, [short, long], 4, cue, 3, a)
    assert outs[0] == short  # finished within the budget: untouched
    cue_len = len(tokenizer(cue.format(word="big"), add_special_tokens=False)["input_ids"])
    assert outs[1]["end"] == "forced" and outs[1]["text"].startswith("The opposite of 'big' is")
    assert 4 + cue_len <= outs[1]["num_tokens"] <= 4 + cue_len + 3
    # The forced answer is what the checker reads: a tail "small" would be right.
    said = [{"text": "The opposite of 'big' is small."}] * 2
    assert tradeoff.rewards(said, rows[::-1], opposites_reward) == [1.0, 0.0]  # right for 'big' only
    s = tradeoff.score_forced(outs, rows, opposites_reward)
    assert s["forced"] == 0.5 and s["mean_tokens"] == pytest.approx((2 + outs[1]["num_tokens"]) / 2)
    assert tradeoff.with_budget_request(rows[0]["prompt"], 8)[-1]["content"].endswith("Answer in at most 8 tokens.")
    assert rows[0]["prompt"][-1]["content"].endswith("?")  # the original prompt is not modified


def test_length_tokens_tiny(quickstart_layout, tiny_causal_dir, tmp_path):
    result, _ = _run("length_tokens", quickstart_layout, tiny_causal_dir, tmp_path)
    assert result["completions"] == 8 and result["tokens"] > 0
    # the ranking's counts, recounted from the critic's own length shifts: net = times above +threshold minus times
    # below -threshold, positive for every listed token (more often up than down), listed by net
    from lenvm_rl.evaluation.common import heldout_examples, load_critic, right_pad

    critic = load_critic(str(quickstart_layout / "model"))
    examples, _ = heldout_examples(
        str(quickstart_layout / "model"), None, critic.tokenizer, 8, critic.use_chat_template
    )
    up, down, eos_seen = Counter(), Counter(), 0
    for ex in examples:
        ids, mask, _, prompt_len = right_pad([ex], critic._pad_id())
        with torch.no_grad():
            shift = critic.length_shift(ids, mask, prompt_len)[0]
        completion = ids[0, int(prompt_len[0]) : int(mask[0].sum())].tolist()
        assert completion[-1] == critic.tokenizer.eos_token_id  # every finished completion ends with EOS
        eos_seen += completion.count(critic.tokenizer.eos_token_id)
        for j, tok in enumerate(completion, int(prompt_len[0])):
            up[tok] += float(shift[j]) > result["threshold"]
            down[tok] += float(shift[j]) < -result["threshold"]
    assert result["longer"], "a random critic's shifts cross the threshold somewhere"
    for r in result["longer"]:
        assert r["count"] == up[r["id"]] and r["net"] == up[r["id"]] - down[r["id"]] > 0
    assert [r["net"] for r in result["longer"]] == sorted((r["net"] for r in result["longer"]), reverse=True)
    assert result["eos"]["occurrences"] == eos_seen == len(examples)


def test_visualize_tiny(quickstart_layout, tiny_causal_dir, tmp_path):
    result, out = _run("visualize", quickstart_layout, tiny_causal_dir, tmp_path, "--index", "0")
    rows = result["tokens"]
    assert [r["true_remaining"] for r in rows] == list(range(len(rows) - 1, -1, -1))  # counts down to 0 at EOS
    page = (out / "visualize.html").read_text()
    assert page.startswith("<!doctype html>") and page.count(" data-i=") == len(rows) and "title=" in page
    with pytest.raises(ValueError, match="out of range"):
        _run("visualize", quickstart_layout, tiny_causal_dir, tmp_path, "--index", "999")


@pytest.mark.slow  # two evaluation runs
def test_lifebench_exclude_tasks_draws_from_the_rest(
    quickstart_layout, tiny_causal_dir, tmp_path, lifebench_file, monkeypatch
):
    tasks = lifebench.load_tasks(str(lifebench_file), {"en"})  # 7 rows: create 3, qa 2, reasoning 2
    first = [dict(t, uid=lifebench.task_uid(t, i)) for i, t in enumerate(lifebench.draw_tasks(tasks, 3, seed=0))]
    rows = [{"uid": t["uid"], "category": t["category"]} for t in first] + [{"uid": "user-1", "category": "user"}]
    run_json = tmp_path / "lifebench.json"
    run_json.write_text(json.dumps({"rows": rows}))
    cells = tmp_path / "lifebench_cells.jsonl"
    cells.write_text(json.dumps({"mode": "equal", "arm": "plain", "target": 16, "key": "k", "rows": rows}) + "\n")
    assert lifebench.tasks_of_run(str(run_json)) == lifebench.tasks_of_run(str(cells)) == {t["uid"] for t in first}
    with pytest.raises(FileNotFoundError, match="exclude_tasks"):
        lifebench.tasks_of_run(str(tmp_path / "missing.json"))
    only_user = tmp_path / "user.json"
    only_user.write_text(json.dumps({"rows": rows[-1:]}))
    with pytest.raises(ValueError, match="no LIFEBench task"):
        lifebench.tasks_of_run(str(only_user))

    # end to end on the tiny critic: the second draw shares no task with the first
    base_argv = ["--critic", str(quickstart_layout / "model"), "--generator", str(tiny_causal_dir), "--data"]
    base_argv += [str(lifebench_file), "--targets", "6", "--modes", "equal", "--arms", "plain", "--max_new_tokens", "8"]
    base_argv += ["--no_user_prompts", "--seed", "1"]
    argv = base_argv + ["--rows_per_cell", "4"]
    result = lifebench.main(argv + ["--output_dir", str(tmp_path / "second"), "--exclude_tasks", str(run_json)])
    second = {r["uid"] for r in result["rows"]}
    assert len(second) == 4 and not second & {t["uid"] for t in first}
    assert result["config"]["exclude_tasks"] == str(run_json)
    # several earlier runs at once: the third draw shares no task with either (7 tasks - 3 - 4 leaves nothing)
    second_json = tmp_path / "second" / "lifebench.json"
    with pytest.raises(ValueError, match="leaves no LIFEBench task"):
        lifebench.main(
            argv + ["--output_dir", str(tmp_path / "third"), "--exclude_tasks", f"{run_json}, {second_json}"]
        )
    third = lifebench.main(  # the same tasks twice: excluded once, nothing refused
        base_argv
        + ["--rows_per_cell", "2", "--output_dir", str(tmp_path / "third"), "--exclude_tasks", f"{run_json},{cells}"]
    )
    assert not {r["uid"] for r in third["rows"]} & {t["uid"] for t in first}

    no_uid = tmp_path / "no_uid.json"
    no_uid.write_text(json.dumps({"rows": [{"critic": "x", "mode": "equal"}]}))
    with pytest.raises(ValueError, match="rows have no 'uid'"):
        lifebench.tasks_of_run(str(no_uid))

    # excluding every task, or tasks this data does not have, is refused before a model is loaded
    from lenvm_rl.evaluation import common

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the request was checked")

    monkeypatch.setattr(common, "load_critic", no_models)
    everything = tmp_path / "all.json"
    all_rows = [{"uid": lifebench.task_uid(t, i), "category": t["category"]} for i, t in enumerate(tasks)]
    everything.write_text(json.dumps({"rows": all_rows}))
    with pytest.raises(ValueError, match="leaves no LIFEBench task"):
        lifebench.main(argv + ["--output_dir", str(tmp_path / "none"), "--exclude_tasks", str(everything)])
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"rows": rows[:2] + [{"uid": "cn:404", "category": "qa"}]}))
    with pytest.raises(ValueError, match="names no file"):  # only commas: it would exclude nothing
        lifebench.main(argv + ["--output_dir", str(tmp_path / "none"), "--exclude_tasks", " , "])
    with pytest.raises(ValueError, match="elsewhere.json: 3 tasks listed, 1 of them not in"):
        lifebench.main(argv + ["--output_dir", str(tmp_path / "none"), "--exclude_tasks", str(elsewhere)])
