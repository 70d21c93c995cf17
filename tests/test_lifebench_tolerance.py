"""evals/experiments/lifebench_tolerance.py: one LIFEBench run per value tolerance with the rules-only control at
each, reuse of a base cells file, and the input checks (tiny random generator and critic, --tiny LIFEBench)."""

import json

import pytest
import torch

from evals.experiments import lifebench_tolerance as lt
from lenvm_rl.evaluation import lifebench


@pytest.fixture(scope="module")
def tiny_critic(tmp_path_factory, tiny_causal_dir, tokenizer):
    from lenvm_rl.modeling import LengthValueModel

    path = tmp_path_factory.mktemp("tol") / "model"
    torch.manual_seed(0)
    LengthValueModel.from_backbone(str(tiny_causal_dir), gamma=0.95).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _argv(critic, generator, data, runs, out, tolerances, *extra):
    return [
        "--tiny",
        "--critic",
        str(critic),
        "--generator",
        str(generator),
        "--data",
        str(data),
        "--modes",
        "equal",
        "--arms",
        "plain,rules_only,lenvm",
        "--tolerances",
        tolerances,
        "--runs_dir",
        str(runs),
        "--output_dir",
        str(out),
        *extra,
    ]


@pytest.mark.slow  # an experiment script, tiny
def test_sweep_runs_each_tolerance_with_its_control(tiny_critic, tiny_causal_dir, lifebench_file, tmp_path):
    first = lt.main(_argv(tiny_critic, tiny_causal_dir, lifebench_file, tmp_path / "a", tmp_path / "out_a", "0.1"))
    base = tmp_path / "a" / "rho_0.1" / lifebench.CELLS_FILE
    result = lt.main(
        _argv(
            tiny_critic,
            tiny_causal_dir,
            lifebench_file,
            tmp_path / "b",
            tmp_path / "out_b",
            "0.1,2",
            "--base_cells",
            str(base),
        )
    )
    rows = result["summary"]
    assert [(r["arm"], r["value_tolerance"]) for r in rows] == [
        ("rules_only", 0.1),
        ("lenvm", 0.1),
        ("rules_only", 2.0),
        ("lenvm", 2.0),
    ]
    assert all(r["mode"] == "equal" and r["target"] == 6 and r["n"] == 5 for r in rows)
    assert result["runs"] == {"0.1": str(tmp_path / "b" / "rho_0.1"), "2": str(tmp_path / "b" / "rho_2")}
    # the base cells were reused for rho 0.1: nothing appended, the same figures as the first sweep
    assert (tmp_path / "b" / "rho_0.1" / lifebench.CELLS_FILE).read_text() == base.read_text()
    assert rows[:2] == first["summary"]
    # rho 2 was generated: plain reused from the base (3 cells in it), rules_only and lenvm added
    assert len((tmp_path / "b" / "rho_2" / lifebench.CELLS_FILE).read_text().splitlines()) == 3 + 2
    # a constant critic's weight cancels: rules_only gives the same answers at both tolerances
    assert result["rules_only_moved"] == []
    answers = []
    for rho in ("0.1", "2"):
        lines = (tmp_path / "b" / f"rho_{rho}" / lifebench.CELLS_FILE).read_text().splitlines()
        cell = next(c for c in map(json.loads, lines) if c["arm"] == "rules_only")
        answers.append([r["token_ids"] for r in cell["rows"]])
    assert answers[0] == answers[1]
    # without --base_cells, each rho starts from the previous rho's cells: plain is generated once
    lt.main(_argv(tiny_critic, tiny_causal_dir, lifebench_file, tmp_path / "c", tmp_path / "out_c", "0.1,2"))
    assert len((tmp_path / "c" / "rho_2" / lifebench.CELLS_FILE).read_text().splitlines()) == 3 + 2
    md = (tmp_path / "out_b" / f"{lt.NAME}.md").read_text()
    assert "rules_only the same at every rho > 0: yes" in md
    assert (tmp_path / "out_b" / f"{lt.NAME}.png").stat().st_size > 0


def test_rules_only_moves_flags_a_changed_control():
    row = dict.fromkeys(lt.KEYS, 0.5) | {"mode": "equal", "target": 16, "arm": "rules_only"}
    same = [row | {"value_tolerance": 0.1}, row | {"value_tolerance": 1.0}, row | {"value_tolerance": 0.0, "ls": 1}]
    assert lt.rules_only_moves(same) == []  # rho 0 (the nearest value, greedy for a constant critic) is not compared
    assert lt.rules_only_moves(same + [row | {"value_tolerance": 3.0, "ls": 0.4}]) == [("equal", 16)]


def test_bad_input_is_refused_before_any_model_loads(tmp_path):
    for bad in ("", "0.1,x", "-1", "0.1,0.1", "nan"):
        with pytest.raises(ValueError, match="tolerances"):
            lt.parse_tolerances(bad)
    argv = ["--critic", str(tmp_path / "none"), "--arms", "plain,lenvm", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="rules_only"):
        lt.main(argv)
    with pytest.raises(FileNotFoundError, match="base_cells"):
        lt.main(["--critic", str(tmp_path / "none"), "--base_cells", str(tmp_path / "missing.jsonl")])
