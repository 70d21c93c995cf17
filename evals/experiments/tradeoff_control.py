"""Set control runs beside a trained critic's `lenvm eval tradeoff` run on the same prompts: is the shortening the
trained values', or would any values tilted as hard (or favouring EOS alone) do the same?

A control run needs only its own arm: with the same seed, prompts and samples its plain answers are the trained
run's draw for draw (checked here, answer by answer). Two kinds: a run with another critic's tilt points (e.g. a
random value head on the same backbone), and a run with the EOS-bonus curve (``--eos_bonuses``: the tilt rule with
a constant critic, which only favours EOS). Reported, each with a 95 % paired bootstrap interval over prompts:

- every control tilt point against the trained run's curves at the same tokens, and the trained critic's point at
  the same beta minus it (accuracy and mean tokens);
- every trained tilt point against every curve, the EOS-bonus curve included.

    python -m evals.experiments.tradeoff_control --result evals/results/tradeoff_fresh_words/trained/tradeoff.json \
        --control evals/results/tradeoff_fresh_words/random/tradeoff.json,evals/results/tradeoff_fresh_words/eos_bonus/tradeoff.json \
        --output_dir evals/results/tradeoff_fresh_words
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lenvm_rl.evaluation import tradeoff

NAME = "tradeoff_control"
CURVES = ("budget", "forcing", "prompted", "eos_bonus")


@dataclass
class ControlArguments:
    result: str = field(metadata={"help": "tradeoff.json of the trained critic (with the curves)."})
    control: str = field(
        metadata={"help": "Control runs' tradeoff.json, comma-separated (their tilt and EOS-bonus points are read)."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where tradeoff_control.json / .md / .png go."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap resamples over prompts."})


def check_paired(result: dict, control: dict) -> None:
    """Refuse two runs that did not answer the same prompts with the same plain draws."""
    for key in ("task", "prompts", "samples", "cap", "sampling", "tilt_top_k"):
        if result.get(key) != control.get(key):
            raise ValueError(f"the runs differ in {key!r}: {result.get(key)!r} vs {control.get(key)!r}")
    if "per_answer" not in result["budget"][-1] or "per_answer" not in control["budget"][-1]:
        raise ValueError("both runs need per-answer scores (tradeoff.json from this version of `lenvm eval tradeoff`)")
    if result["plain_lengths"] != control["plain_lengths"] or (
        result["budget"][-1]["per_answer"] != control["budget"][-1]["per_answer"]
    ):
        raise ValueError(
            "the runs' plain answers differ, so their prompts or draws are not the same: rerun the control with the "
            "trained run's --seed, --data, --prompts, --samples and --batch-size"
        )


def paired_difference(a: dict, b: dict, samples: int, n_boot: int, seed: int = 0) -> dict:
    """``a - b`` in accuracy and mean tokens, with 95 % intervals from one paired bootstrap over prompts."""
    acc_a, tok_a, acc_b, tok_b = (
        tradeoff.prompt_means(q["per_answer"][k], samples) for q in (a, b) for k in ("correct", "tokens")
    )
    idx = tradeoff.resamples(len(acc_a), n_boot, seed)
    return {
        "accuracy": a["accuracy"] - b["accuracy"],
        "accuracy_ci95": tradeoff.interval95((acc_a - acc_b)[idx].mean(1)),
        "mean_tokens": a["mean_tokens"] - b["mean_tokens"],
        "mean_tokens_ci95": tradeoff.interval95((tok_a - tok_b)[idx].mean(1)),
    }


def against_curves(point: dict, curves: dict[str, list[dict]], samples: int, n_boot: int) -> dict:
    """A tilt point's margins over every curve at its tokens, with intervals, and how it meets each curve."""
    q = {k: point[k] for k in ("beta", "accuracy", "mean_tokens", "ends", "per_answer")}
    tradeoff.compare(q, curves)
    found, _ = tradeoff.margins(q, curves, samples, n_boot)
    return {k: v for k, v in q.items() if k != "per_answer"} | found


def compare_control(result: dict, controls: list[dict], n_boot: int = 2000) -> dict:
    """``{"control_tilt": rows, "trained_tilt": rows}`` (module docstring)."""
    samples = result["samples"]
    curves = {name: result.get(name) or [] for name in CURVES}
    for control in controls:
        check_paired(result, control)
        for point in control.get("eos_bonus") or []:  # several runs may each bring part of the curve
            if any(p["bonus"] == point["bonus"] for p in curves["eos_bonus"]):
                raise ValueError(f"two runs bring the EOS bonus b = {point['bonus']:g}; pass one")
            curves["eos_bonus"] = [*curves["eos_bonus"], point]
    trained = {q["beta"]: q for q in result["tilt"]}
    control_rows = []
    for control in controls:
        for c in control["tilt"]:
            row = {"critic": control["critic"], **against_curves(c, curves, samples, n_boot)}
            if c["beta"] in trained:
                row["trained_minus_control"] = paired_difference(trained[c["beta"]], c, samples, n_boot)
            control_rows.append(row)
    trained_rows = [against_curves(q, curves, samples, n_boot) for q in result["tilt"]]
    return {"control_tilt": control_rows, "trained_tilt": trained_rows, "curves": curves}


def margin(r: dict, name: str) -> str:
    if f"margin_vs_{name}" not in r:
        return "-"
    lo, hi = r[f"margin_vs_{name}_ci95"]
    where = "" if r[f"{name}_comparison"] == "same tokens" else f" ({r[f'{name}_comparison']})"
    return f"{100 * r[f'margin_vs_{name}']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{where}"


def markdown(out: dict, result: dict) -> str:
    lines = [
        f"### Tilting beside its controls (trained critic: {result['critic']})",
        "",
        "| tilt point | mean tokens | accuracy | ends natural / cut | over the hard budget | over forcing | "
        "over the prompted budget | over the EOS bonus |",
        "|---|---:|---:|---|---|---|---|---|",
    ]
    points = [("trained", r) for r in out["trained_tilt"]] + [(r["critic"], r) for r in out["control_tilt"]]
    for who, r in points:
        lines.append(
            f"| {who}, beta {r['beta']:g} | {r['mean_tokens']:.1f} | {100 * r['accuracy']:.1f} % | "
            f"{r['ends']['natural']} / {r['ends']['cap']} | " + " | ".join(margin(r, name) for name in CURVES) + " |"
        )
    diffs = [r for r in out["control_tilt"] if "trained_minus_control" in r]
    if diffs:
        lines += ["", "| trained minus control, same beta | accuracy | mean tokens |", "|---|---|---|"]
        for r in diffs:
            d = r["trained_minus_control"]
            lo, hi = d["accuracy_ci95"]
            tlo, thi = d["mean_tokens_ci95"]
            lines.append(
                f"| {r['critic']}, beta {r['beta']:g} | {100 * d['accuracy']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                f"{d['mean_tokens']:+.1f} [{tlo:+.1f}, {thi:+.1f}] |"
            )
    lines += [
        "",
        "Margins in points of accuracy at the tilt point's mean tokens; brackets: 95 % paired bootstrap "
        "intervals over prompts.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    (args,) = TrlParser([ControlArguments], prog=f"python -m evals.experiments.{NAME}").parse_args_and_config(argv)
    result = json.loads(Path(args.result).read_text())
    paths = [p for p in args.control.split(",") if p.strip()]
    controls = [json.loads(Path(p).read_text()) for p in paths]
    compared = compare_control(result, controls, args.n_boot)
    out = {"result": args.result, "controls": paths, **{k: v for k, v in compared.items() if k != "curves"}}
    md = markdown(out, result)
    if args.output_dir:
        path = Path(args.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{NAME}.json").write_text(json.dumps(out, indent=1) + "\n")
        (path / f"{NAME}.md").write_text(md)
        both = dict(result, **compared["curves"], tilt_control=[dict(q) for c in controls for q in c["tilt"]])
        for q in [q for name in (*CURVES, "tilt", "tilt_control") for q in both.get(name) or []]:
            q.setdefault("accuracy_ci95", tradeoff.accuracy_interval(q, result["samples"]))
        tradeoff.plot(both, path / f"{NAME}.png")
    print(md)
    return out


if __name__ == "__main__":
    main()
