"""evals/experiments/broad_categories.py: the split of the extra categories, the pairing (one held-out set, one
gamma, the broad arm's training data = the default's + one sample of each extra training prompt), the reuse and
the input checks; the broad arm's training is faked (it is `train_and_report`, tested with the quickstart)."""

import json

import pytest
import torch
from conftest import make_records, write_jsonl

from evals.experiments import broad_categories as bc
from lenvm_rl.metrics import finished_lengths_by_prompt

GAMMA = 0.95


def categorised(tokenizer, categories, per_category, samples, seed):
    """Records of ``per_category`` prompts per category, ``samples`` each, ids '<category>-<i>'."""
    records = []
    for c, cat in enumerate(categories):
        rows = make_records(tokenizer, n=per_category * samples, seed=seed + c, truncated_every=5)
        for j, r in enumerate(rows):
            i, k = j % per_category, j // per_category
            r.update(prompt_id=f"{cat}-{i}", category=cat, sample_index=k)
            r["prompt"] = [{"role": "user", "content": f"A {cat} request, number {i}."}]
        records += rows
    return records


def save_critic(path, source, tokenizer, seed=0):
    from lenvm_rl.modeling import LengthValueModel

    torch.manual_seed(seed)  # the value head's initialisation
    LengthValueModel.from_backbone(str(source), gamma=GAMMA).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_extra_split_uses_the_quickstart_draw_and_one_sample_per_training_prompt(tokenizer):
    extra = categorised(tokenizer, bc.EXTRA, per_category=5, samples=3, seed=0)
    for seed in (0, 2):
        train, held = bc.broad_split(extra, seed, per_category=2)
        held_ids = {r["prompt_id"] for r in held}
        assert len(held_ids) == 8 and all(sum(i.startswith(c) for i in held_ids) == 2 for c in bc.EXTRA)
        assert len(held) == 8 * 3  # every sample of a held-out prompt
        assert {r["sample_index"] for r in train} == {seed} and len(train) == 12
        assert not held_ids & {r["prompt_id"] for r in train}
    assert bc.broad_split(extra, 1, 2)[1] != bc.broad_split(extra, 0, 2)[1]  # the seed moves the draw
    with pytest.raises(SystemExit, match="lacks sample 3"):
        bc.broad_split(extra, 3, 2)


def test_sampling_must_match_the_default_run(tokenizer):
    extra = categorised(tokenizer, bc.EXTRA, 3, 1, 0)
    base = categorised(tokenizer, ["story"], 3, 1, 0)
    bc.check_same_sampling(extra, base)
    for r in extra[:1]:
        r["sampling"] = {**r["sampling"], "temperature": 0.7}
    with pytest.raises(SystemExit, match="sampled with"):
        bc.check_same_sampling(extra, base)
    with pytest.raises(SystemExit, match="no prompts of"):
        bc.check_same_sampling([r for r in extra if r["category"] != "code"][1:], base)


@pytest.mark.slow  # over ~5 s on 2 cores
def test_both_arms_are_judged_on_one_heldout_set_and_reused(tmp_path, tokenizer, tiny_causal_dir, monkeypatch):
    import lenvm_rl.quickstart as qs

    runs = tmp_path / "runs"
    default = runs / "default_s0"
    base_train = categorised(tokenizer, ["story", "yes_no"], 6, 1, seed=10)
    base_held = [
        dict(r, prompt_id="h" + r["prompt_id"]) for r in categorised(tokenizer, ["story", "yes_no"], 2, 3, seed=20)
    ]
    default.mkdir(parents=True)
    write_jsonl(default / "rollouts_train.jsonl", base_train)
    write_jsonl(default / "rollouts_heldout.jsonl", base_held)
    save_critic(default / "model", tiny_causal_dir, tokenizer)
    cfg = qs.QuickstartConfig(categories="story,yes_no", seed=0)
    (default / "metrics.json").write_text(json.dumps({"gamma": GAMMA, "config": cfg.__dict__}))
    extra_file = write_jsonl(tmp_path / "extra.jsonl", categorised(tokenizer, bc.EXTRA, 5, 3, seed=30))

    calls = []

    def fake_train_and_report(cfg, train, heldout, val_records=(), sampling_seconds=0.0):
        calls.append((cfg, train, heldout))
        save_critic(f"{cfg.output_dir}/model", tiny_causal_dir, tokenizer)
        report = {"gamma": float(cfg.gamma), "train": "t", "heldout": "h", "seconds": {}, "config": cfg.__dict__}
        (tmp_path / "runs" / "broad_s0" / "metrics.json").write_text(json.dumps(report))
        return report

    monkeypatch.setattr(qs, "train_and_report", fake_train_and_report)
    argv = ["--seeds", "0", "--runs_dir", str(runs), "--extra_rollouts", str(extra_file)]
    argv += ["--eval_prompts_per_category", "2", "--output_dir", str(tmp_path / "out")]
    result = bc.main(argv)

    ((cfg_b, train_b, held_b),) = calls
    assert cfg_b.categories == "story,yes_no," + ",".join(bc.EXTRA) and float(cfg_b.gamma) == GAMMA
    assert train_b[: len(base_train)] == base_train and len(train_b) == len(base_train) + 4 * 3
    assert held_b[: len(base_held)] == base_held and len(held_b) == len(base_held) + 4 * 2 * 3
    run = result["per_seed"][0]
    judged = finished_lengths_by_prompt(held_b)  # prompts with two finished samples or more: the ground truth
    n_extra = sum(i.split("-")[0] in bc.EXTRA for i in judged)
    for arm in ("default", "broad"):
        n = {sub: run[arm][sub]["n_prompts"] for sub in bc.SUBSETS}
        assert n == {"all": len(judged), "default categories": len(judged) - n_extra, "extra categories": n_extra}
    assert 0 < n_extra <= 8 and len(judged) - n_extra > 0
    # The same tiny critic in both arms: identical errors, a zero paired difference; the constants differ
    # (each arm's own training lengths).
    assert run["broad"]["all"]["critic"] == run["default"]["all"]["critic"]
    assert result["broad_minus_default"]["all"]["mre"] == [0.0]
    assert run["broad"]["constant"] != run["default"]["constant"]
    assert result["switch_default"] is False  # not lower: no switch
    assert "broad - default on extra categories" in (tmp_path / "out" / "broad_categories.md").read_text()
    bc.main(argv)  # the broad run is there with the same settings: not trained again
    assert len(calls) == 1
