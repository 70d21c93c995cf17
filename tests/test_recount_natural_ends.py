"""The recount of committed natural ends: one forward per stored answer gives the p_eos the decoding steps recorded."""

import json

import pytest

from evals.experiments import recount_natural_ends as recount
from lenvm_rl.evaluation import lifebench


@pytest.mark.slow  # over ~5 s on 2 cores
def test_recount_reproduces_the_recorded_p_eos_and_labels(tiny_causal_dir, tokenizer, lifebench_file, tmp_path):
    from lenvm_rl.modeling import LengthValueModel

    critic = tmp_path / "critic"
    LengthValueModel.from_backbone(str(tiny_causal_dir), gamma=0.95).save_pretrained(critic)
    tokenizer.save_pretrained(critic)
    run = tmp_path / "run"
    common = ["--generator", str(tiny_causal_dir), "--data", str(lifebench_file)]
    lifebench.main(
        ["--tiny", "--critic", str(critic), "--output_dir", str(run), "--arms", "plain,truncate,lenvm", *common]
    )
    stored = {
        (c["mode"], c["arm"], c["target"], r["uid"]): r
        for c in lifebench.load_cells(run / lifebench.CELLS_FILE).values()
        for r in c["rows"]
    }
    report = recount.main(["--runs", str(run), "--output_dir", str(tmp_path / "out"), *common])
    (got,) = report["runs"]
    assert got["temperature"] == 0.7 and got["nll_check_max_error"] < 1e-2  # the prompts were rebuilt right
    checked = 0
    for r in got["rows"]:
        want = stored[r["mode"], r["arm"], r["target"], r["uid"]]
        if r["arm"] != "truncate" and want["end"] != "cap":  # every EOS end, forced ones too
            assert r["p_eos"] == pytest.approx(want["p_eos"], rel=1e-3)
            checked += 1
    assert checked > 0
    for c in got["cells"]:  # the stored labels already follow the threshold: recounting changes none
        assert c["natural_new"] == c["natural_old"] and c["relabelled"] == 0
    on_disk = json.loads((tmp_path / "out" / f"{recount.NAME}.json").read_text())
    assert on_disk["plain_ends"]["n"] == sum(r["arm"] == "plain" and r["end"] == "natural" for r in got["rows"])
    assert (tmp_path / "out" / f"{recount.NAME}.md").read_text().count("| lenvm |") == 3  # one row per mode
