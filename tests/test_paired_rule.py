"""The rule that adopts a recipe, applied to a critics table: seed by seed, every cell, nothing passes by omission."""

import json

import pytest

from evals.experiments import paired_rule


def row(critic, mode, target, natural_margin, ls=100.0):
    return dict(critic=critic, mode=mode, target=target, natural_margin=natural_margin, ls=ls, nll_gap_to_plain=0.3)


def table(cand_equal, base_equal, cand_at_most=(0.4, 0.4), ls=100.0):
    """Two seeds; equal margins per (seed, target 16/32) for each family, at_most margins for the candidate."""
    rows = []
    for seed in (0, 1):
        for i, t in enumerate((16, 32)):
            rows.append(row(f"new_s{seed}", "equal", t, cand_equal[seed][i]))
            rows.append(row(f"old_s{seed}", "equal", t, base_equal[seed][i]))
            rows.append(row(f"new_s{seed}", "at_most", t, cand_at_most[i], ls))
            rows.append(row(f"old_s{seed}", "at_most", t, 0.5))
        rows.append(row(f"other_s{seed}", "equal", 16, 0.9))  # another family: ignored
    return rows


def test_met_only_when_every_seed_and_target_holds():
    ahead = ((0.3, 0.3), (0.3, 0.3))
    behind_once = ((0.3, 0.3), (0.3, 0.1))
    base = ((0.2, 0.2), (0.2, 0.2))
    checks, met = paired_rule.verdict(table(ahead, base), "new", "old")
    assert met and len(checks) == 2 * 4 and {c["seed"] for c in checks} == {0, 1}
    checks, met = paired_rule.verdict(table(behind_once, base), "new", "old")
    failed = [(c["seed"], c["mode"], c["target"]) for c in checks if not c["ok"]]
    assert not met and failed == [(1, "equal", 32)]
    _, met = paired_rule.verdict(table(base, base), "new", "old")  # a tie is not "above"
    assert not met
    _, met = paired_rule.verdict(table(ahead, base, cand_at_most=(0.4, 0.2)), "new", "old")  # At Most goal lost
    assert not met
    _, met = paired_rule.verdict(table(ahead, base, ls=90.0), "new", "old")  # natural ends, but LS under 95
    assert not met


def test_refuses_tables_that_do_not_pair():
    rows = table(((0.3, 0.3), (0.3, 0.3)), ((0.2, 0.2), (0.2, 0.2)))
    with pytest.raises(ValueError, match="no critic named missing_s"):
        paired_rule.verdict(rows, "missing", "old")
    with pytest.raises(ValueError, match="seeds differ"):
        paired_rule.verdict([r for r in rows if r["critic"] != "old_s1"], "new", "old")
    with pytest.raises(ValueError, match=r"old_s0 lacks the cells \[\('at_most', 32\), \('equal', 32\)\]"):
        paired_rule.verdict([r for r in rows if (r["critic"], r["target"]) != ("old_s0", 32)], "new", "old")
    # a candidate cell missing (a check that would pass by omission), on a seed after the first
    without = [r for r in rows if (r["critic"], r["mode"], r["target"]) != ("new_s1", "equal", 32)]
    with pytest.raises(ValueError, match=r"new_s1 lacks the cells \[\('equal', 32\)\]"):
        paired_rule.verdict(without, "new", "old")
    with pytest.raises(ValueError, match="want \\[0, 1, 2\\]"):  # a pre-set seed missing from both families
        paired_rule.verdict(rows, "new", "old", seeds=[0, 1, 2])
    with pytest.raises(ValueError, match="lacks the cells"):  # a pre-set target missing
        paired_rule.verdict(rows, "new", "old", targets=[16, 32, 64])
    with pytest.raises(ValueError, match="two equal 16 rows"):
        paired_rule.verdict(rows + rows[:1], "new", "old")
    assert paired_rule.verdict(rows, "new", "old", seeds=[1, 0], targets=[32, 16])[1]


def with_mre(rows, cand_mre, base_mre):
    """The critics' held-out MRE on each of their rows, per seed."""
    mre = {f"new_s{s}": m for s, m in enumerate(cand_mre)} | {f"old_s{s}": m for s, m in enumerate(base_mre)}
    return [dict(r, heldout_mre=mre.get(r["critic"])) for r in rows]


def test_non_inferior_compares_family_means_within_the_allowance():
    base = ((0.30, 0.30), (0.20, 0.20))
    # seed 1 loses 10 points at 16, seed 0 gains 4: the mean loses 3 points, within 5
    cand = ((0.34, 0.30), (0.10, 0.20))
    checks, met = paired_rule.verdict(table(cand, base), "new", "old", non_inferior=5)
    assert met
    per_seed = [c for c in checks if c["mode"] == "equal" and c["seed"] != "mean"]
    assert len(per_seed) == 4 and all(c["ok"] is None for c in per_seed)  # information only
    means = {c["target"]: c for c in checks if c["seed"] == "mean"}
    assert means[16]["candidate"] == pytest.approx(0.22) and means[16]["baseline"] == pytest.approx(0.25)
    assert not paired_rule.verdict(table(cand, base), "new", "old", non_inferior=2)[1]  # 3 points lost > 2
    # a loss of exactly the allowance passes on the 1/60 grid of a 60-row cell: the mean of (0, 20/60) is
    # 0.16666666666666666, the baseline's (0, 26/60) less 5 points 0.16666666666666669
    exact, grid_base = ((0.0, 0.3), (20 / 60, 0.3)), ((0.0, 0.3), (26 / 60, 0.3))
    assert paired_rule.verdict(table(exact, grid_base), "new", "old", non_inferior=5)[1]
    assert not paired_rule.verdict(table(((0.0, 0.3), (19 / 60, 0.3)), grid_base), "new", "old", non_inferior=5)[1]
    # the kept mode's goal still holds seed by seed
    assert not paired_rule.verdict(table(cand, base, cand_at_most=(0.4, 0.2)), "new", "old", non_inferior=5)[1]


def test_max_mre_rise_checks_the_family_mean_and_needs_the_mre():
    rows = table(((0.3, 0.3), (0.3, 0.3)), ((0.2, 0.2), (0.2, 0.2)))
    ok = paired_rule.verdict(with_mre(rows, (0.50, 0.44), (0.45, 0.45)), "new", "old", max_mre_rise=2)
    assert ok[1] and ok[0][-1]["mode"] == "heldout_mre" and ok[0][-1]["candidate"] == pytest.approx(0.47)
    assert not paired_rule.verdict(with_mre(rows, (0.50, 0.46), (0.45, 0.45)), "new", "old", max_mre_rise=2)[1]
    with pytest.raises(ValueError, match="new_s0's rows lack heldout_mre"):
        paired_rule.verdict(rows, "new", "old", max_mre_rise=2)
    disagree = [dict(r, heldout_mre=0.4 if r["target"] == 16 else 0.5) for r in with_mre(rows, (0.5, 0.5), (0.5, 0.5))]
    with pytest.raises(ValueError, match="rows disagree on heldout_mre"):
        paired_rule.verdict(disagree, "new", "old", max_mre_rise=2)
    # a rise of exactly 2 points passes although 0.18 + 0.02 is 0.19999999999999998 in floats
    assert paired_rule.verdict(with_mre(rows, (0.20, 0.20), (0.18, 0.18)), "new", "old", max_mre_rise=2)[1]


def test_a_mode_without_cells_is_refused_rather_than_passed():
    rows = table(((0.3, 0.3), (0.3, 0.3)), ((0.2, 0.2), (0.2, 0.2)))
    with pytest.raises(ValueError, match="no 'equl' cells"):
        paired_rule.verdict(rows, "new", "old", decide_mode="equl", keep_mode="at_mst")


def test_a_margin_of_exactly_thirty_points_keeps_the_goal():
    assert paired_rule.keeps_goal({"natural_margin": 42 / 60 - 24 / 60, "ls": 100.0})
    assert not paired_rule.keeps_goal({"natural_margin": 41 / 60 - 24 / 60, "ls": 100.0})


def test_cli_writes_the_verdict(tmp_path, capsys):
    path = tmp_path / "lifebench_critics.json"
    path.write_text(json.dumps({"rows": table(((0.3, 0.3), (0.3, 0.1)), ((0.2, 0.2), (0.2, 0.2)))}))
    result = paired_rule.main(
        ["--table", str(path), "--candidate", "new", "--baseline", "old", "--output_dir", str(tmp_path)]
    )
    assert result["met"] is False
    md = (tmp_path / "paired_rule_new_vs_old.md").read_text()
    assert "**not met**" in md and md in capsys.readouterr().out
    assert json.loads((tmp_path / "paired_rule_new_vs_old.json").read_text())["checks"] == result["checks"]
    assert result["non_inferior"] is None and "above the baseline on every seed" in md

    # the non-inferior form from the command line: the bound and the means (to a tenth of a point) in the text
    result = paired_rule.main(
        ["--table", str(path), "--candidate", "new", "--baseline", "old", "--non_inferior", "5"]
        + ["--output_dir", str(tmp_path)]
    )
    md = (tmp_path / "paired_rule_new_vs_old.md").read_text()
    assert result["met"] is True and result["non_inferior"] == 5.0  # 32: mean 20 points vs 20, 16: 30 vs 20
    assert "at most 5 points below" in md and "| mean | equal | 32 | +20.0 | +20.0 | yes |" in md
