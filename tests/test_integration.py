"""One short run of the whole quickstart on the embedded default model (SmolLM2-135M-Instruct, CPU)."""

import json

import pytest

from lenvm_rl.quickstart import QuickstartConfig, run_quickstart


@pytest.mark.integration
def test_quickstart_end_to_end_on_the_embedded_default(tmp_path, default_model_dir):
    cfg = QuickstartConfig(
        output_dir=str(tmp_path / "qs"),
        categories="one_word,yes_no,short_fact",
        eval_prompts_per_category=1,
        train_samples=1,
        eval_samples=3,
        max_new_tokens=48,
        num_train_epochs=1,
        per_device_train_batch_size=4,
        max_length=128,
        generation_batch_size=32,
    )
    report = run_quickstart(cfg)
    out = tmp_path / "qs"
    for name in (
        "model/value_head.safetensors",
        "model/lenvm_config.json",
        "remaining_length.png",
        "summary.md",
        "metrics.json",
        "rollouts_train.jsonl",
        "rollouts_heldout.jsonl",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["gamma"] == report["gamma"]
    assert "LenVM" in report["length_prediction"] and "MRE" in (out / "summary.md").read_text()
    n_train = len((out / "rollouts_train.jsonl").read_text().splitlines())
    # second run: rollouts and model are reused, nothing is sampled or trained again
    first_seconds = report["seconds"]
    again = run_quickstart(cfg)
    # the record keeps what the first run's sampling and training cost; the rerun's own time is beside it
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seconds"] == first_seconds and again["rerun_seconds"]["sampling"] == 0
    assert "This rerun reused the model" in (out / "summary.md").read_text()
    assert len((out / "rollouts_train.jsonl").read_text().splitlines()) == n_train
    assert again["length_prediction"]["LenVM"]["mre"] == pytest.approx(
        report["length_prediction"]["LenVM"]["mre"], rel=1e-4
    )
