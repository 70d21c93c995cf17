"""evals/experiments/lifebench_critics.py: one LIFEBench run per critic on the same cells, margins over the shared
rules-only control, family means, rank agreement with each critic's held-out MRE, and the input checks."""

import json

import pytest
import torch
from conftest import summary_cell

from evals.experiments import lifebench_critics as lc


def test_compare_margins_families_and_rank_agreement():
    ref = summary_cell("equal", "rules_only", 16, 60.0, 0.1)
    summaries = {
        f"a_s{i}": [ref, summary_cell("equal", "lenvm", 16, 60.0 + i, 0.1 + 0.1 * i, 0.3 - 0.1 * i)] for i in range(3)
    } | {"rand": [ref, summary_cell("equal", "lenvm", 16, 59.0, 0.1)]}
    mre = {"a_s0": 0.6, "a_s1": 0.5, "a_s2": 0.4, "rand": None}
    rows, controls = lc.compare(summaries, mre)
    assert controls == [ref]
    assert [r["family"] for r in rows] == ["a", "a", "a", "rand"]
    assert [r["ls_margin"] for r in rows] == pytest.approx([0.0, 1.0, 2.0, -1.0])
    assert [r["natural_margin"] for r in rows] == pytest.approx([0.0, 0.1, 0.2, 0.0])
    fam = {e["family"]: e for e in lc.by_family(rows)}
    assert fam["a"]["ls_margin"] == pytest.approx(1.0) and fam["a"]["ls_margin_sd"] == pytest.approx(1.0)
    assert fam["a"]["heldout_mre"] == pytest.approx(0.5) and fam["rand"]["heldout_mre"] is None
    assert fam["rand"]["n_critics"] == 1 and fam["rand"]["ls_margin_sd"] is None
    (tau,) = lc.rank_agreement(rows)  # the critic without an MRE is left out
    assert tau["n_critics"] == 3
    assert tau["tau_mre_natural_margin"] == pytest.approx(-1.0)  # lower MRE, more natural ends
    assert tau["tau_mre_nll_gap_to_plain"] == pytest.approx(1.0)  # lower MRE, smaller quality cost
    assert tau["tau_mre_degenerate_rate"] is None  # the same for every critic: no ranking
    md = lc.markdown(rows, controls, lc.by_family(rows), [tau])
    assert "| equal | 16 | a | 3 | 50.0 ± 10.0 | +1.0 ± 1.0 | +10.0 ± 10.0 |" in md
    # the control must be the same answers for every critic
    other = dict(
        summaries, b_s0=[summary_cell("equal", "rules_only", 16, 61.0, 0.1), summary_cell("equal", "lenvm", 16, 1, 0)]
    )
    with pytest.raises(ValueError, match="rules_only differs"):
        lc.compare(other, mre | {"b_s0": None})


def test_names_and_bad_input(tmp_path):
    assert lc.parse_critics("x_s0=/a, y=/b") == {"x_s0": "/a", "y": "/b"}
    assert lc.family("default_s12") == "default" and lc.family("random") == "random"
    for bad in ("x=/a", "x=/a,x=/b", "x/y=/a,z=/b", "x,y=/b", "", "plain_s0=/a,y=/b"):
        with pytest.raises(ValueError, match="critics"):
            lc.parse_critics(bad)
    with pytest.raises(ValueError, match="rules_only"):
        lc.main(["--critics", "a=/x,b=/y", "--arms", "plain,lenvm"])
    with pytest.raises(FileNotFoundError, match="no critic"):
        lc.main(["--critics", f"a={tmp_path},b={tmp_path / 'missing'}", "--output_dir", str(tmp_path)])
    # a hub id is left to the loader (no local check, no MRE); a missing local path is refused whatever its shape
    assert not lc.looks_local("org/critic") and lc.heldout_mre("org/critic") is None
    assert lc.looks_local("runs/seeds/a/model") and lc.looks_local("./a") and lc.looks_local("missing")


@pytest.mark.slow  # an experiment script, tiny
def test_tiny_run_two_critics(tmp_path, tiny_causal_dir, tokenizer, lifebench_file):
    from lenvm_rl.modeling import LengthValueModel

    critics = {}
    for seed in (0, 1):
        path = tmp_path / f"c{seed}" / "model"
        torch.manual_seed(seed)
        LengthValueModel.from_backbone(str(tiny_causal_dir), gamma=0.95).save_pretrained(path)
        tokenizer.save_pretrained(path)
        critics[f"tiny_s{seed}"] = path
    metrics = {"length_prediction": {"LenVM": {"mre": 0.42}}}
    (tmp_path / "c1" / "metrics.json").write_text(json.dumps(metrics))  # a quickstart layout for one critic
    common = ["--tiny", "--generator", str(tiny_causal_dir), "--data", str(lifebench_file), "--modes", "equal,at_most"]
    common += ["--arms", "plain,rules_only,lenvm", "--runs_dir", str(tmp_path / "runs")]
    argv = [
        *common,
        "--critics",
        ",".join(f"{k}={v}" for k, v in critics.items()),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = lc.main(argv)
    assert [(r["critic"], r["mode"]) for r in result["rows"]] == [
        ("tiny_s0", "at_most"),
        ("tiny_s0", "equal"),
        ("tiny_s1", "at_most"),
        ("tiny_s1", "equal"),
    ]
    assert [r["heldout_mre"] for r in result["rows"]] == [None, None, 0.42, 0.42]
    assert [(c["mode"], c["arm"]) for c in result["rules_only"]] == [("at_most", "rules_only"), ("equal", "rules_only")]
    for r in result["rows"]:
        ref = next(c for c in result["rules_only"] if c["mode"] == r["mode"])
        assert r["ls_margin"] == pytest.approx(r["ls"] - ref["ls"]) and r["n"] == ref["n"] == 5
    for name in critics:  # each critic in its own lifebench folder
        assert json.loads((tmp_path / "runs" / name / "lifebench.json").read_text())["critic"] == str(critics[name])
    assert [e["family"] for e in result["families"]] == ["tiny", "tiny"] and result["rank_agreement"] == []
    assert (tmp_path / "out" / f"{lc.NAME}.png").stat().st_size > 0
    for mode in ("equal", "at_most"):  # the family's rows pooled over both critics; the controls counted once
        per = {
            a: sum(e["n"] for e in result["by_category"] if (e["mode"], e["arm"]) == (mode, a))
            for a in ("tiny", "plain")
        }
        assert per == {"tiny": 10, "plain": 5}

    # A later session adds a critic to this table without the first two: the rules-only cells are regenerated and
    # must match; the new critic (the seed-1 weights again) scores what tiny_s1 scored, and the family pools 3 runs.
    previous = ["--previous", str(tmp_path / "out" / f"{lc.NAME}.json"), "--output_dir", str(tmp_path / "out_b")]
    joined = lc.main([*common, "--critics", f"tiny_s2={critics['tiny_s1']}", *previous])
    assert [r["critic"] for r in joined["rows"]] == ["tiny_s0", "tiny_s0", "tiny_s1", "tiny_s1", "tiny_s2", "tiny_s2"]
    for a, b in zip(joined["rows"][2:4], joined["rows"][4:6]):
        assert {k: v for k, v in a.items() if k != "critic"} == {k: v for k, v in b.items() if k != "critic"}
    assert set(joined["critics"]) == {"tiny_s0", "tiny_s1", "tiny_s2"} and len(joined["previous_commands"]) == 1
    assert [e["n_critics"] for e in joined["families"]] == [3, 3]
    for mode in ("equal", "at_most"):
        per = {
            a: sum(e["n"] for e in joined["by_category"] if (e["mode"], e["arm"]) == (mode, a))
            for a in ("tiny", "plain", "rules_only")
        }
        assert per == {"tiny": 15, "plain": 5, "rules_only": 5}
    with pytest.raises(ValueError, match="already has critic"):
        lc.main([*common, "--critics", f"tiny_s1={critics['tiny_s1']}", *previous])


def test_join_previous_refuses_another_draw():
    ref = summary_cell("equal", "rules_only", 16, 60.0, 0.1) | {"mean_nll": 1.5}
    rows, controls = lc.compare({"a_s0": [ref, summary_cell("equal", "lenvm", 16, 62.0, 0.3)]}, {"a_s0": None})
    previous = {"rows": rows, "rules_only": controls, "by_category": [], "critics": {"a_s0": "/a"}, "command": "x"}
    new_rows, new_controls = lc.compare({"a_s1": [ref, summary_cell("equal", "lenvm", 16, 61.0, 0.2)]}, {"a_s1": None})
    joined, _ = lc.join_previous(previous, new_rows, new_controls, [])
    assert [r["critic"] for r in joined] == ["a_s0", "a_s1"]
    # the same answers whose likelihood another thread count summed in another order: the same draw
    lc.join_previous(previous, new_rows, [dict(ref, mean_nll=1.5 * (1 + 1e-6))], [])
    other = [summary_cell("equal", "rules_only", 16, 60.0, 0.2)]  # one more natural end: other answers
    with pytest.raises(ValueError, match="not the same draw"):
        lc.join_previous(previous, new_rows, other, [])
    other = [dict(ref, mean_nll=1.51)]  # the same counts, other text
    with pytest.raises(ValueError, match="not the same draw"):
        lc.join_previous(previous, new_rows, other, [])
    with pytest.raises(ValueError, match="same --modes/--targets"):
        lc.join_previous(previous, new_rows, [summary_cell("equal", "rules_only", 32, 60.0, 0.1)], [])
    # At Least's rule was revised: a table made before (no revision recorded) is refused, one made after is joined
    ref = summary_cell("at_least", "rules_only", 16, 100.0, 0.2)
    rows, controls = lc.compare({"a_s0": [ref, summary_cell("at_least", "lenvm", 16, 100.0, 0.3)]}, {"a_s0": None})
    old_rule = {"rows": rows, "rules_only": controls, "by_category": [], "critics": {"a_s0": "/a"}, "command": "x"}
    new_rows, new_controls = lc.compare(
        {"a_s1": [ref, summary_cell("at_least", "lenvm", 16, 100.0, 0.4)]}, {"a_s1": None}
    )
    with pytest.raises(ValueError, match="older decoding rule"):
        lc.join_previous(old_rule, new_rows, new_controls, [])
    lc.join_previous(old_rule | {"rule_revisions": lc.revisions()}, new_rows, new_controls, [])


def test_by_category_pools_a_family_and_counts_controls_once():
    def row(arm, cat, end):
        return {"mode": "equal", "target": 16, "arm": arm, "category": cat, "end": end}

    controls = [row("plain", "qa", "natural"), row("rules_only", "qa", "forced")]
    results = {
        "a_s0": {"rows": [*controls, row("lenvm", "qa", "natural"), row("lenvm", "create", "forced")]},
        "a_s1": {"rows": [*controls, row("lenvm", "qa", "cap"), row("lenvm", "create", "natural")]},
        "rand": {"rows": [*controls, row("lenvm", "qa", "natural")]},
    }
    got = {(e["category"], e["arm"]): (e["natural"], e["n"]) for e in lc.by_category(results)}
    assert got == {
        ("create", "a"): (1, 2),
        ("qa", "a"): (1, 2),
        ("qa", "plain"): (1, 1),
        ("qa", "rules_only"): (0, 1),
        ("qa", "rand"): (1, 1),
    }
    text = lc.markdown([], [], [], [], lc.by_category(results))
    assert "| equal | 16 | qa | 1/1 | 0/1 | 1/2 | 1/1 |" in text and "| equal | 16 | create | - | - | 1/2 | - |" in text
