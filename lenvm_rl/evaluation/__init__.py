"""Evaluations behind `lenvm eval NAME` (docs/method.md). Each module has ``main(argv) -> dict`` that writes
``NAME.json``, ``NAME.png`` and ``NAME.md`` to its output dir, and a ``--tiny`` mode sized for CI.

    length_prediction   LenVM vs. prompt-only baselines at predicting how long an answer will be
    lifebench           token-level LIFEBench: Equal To / At Most / At Least, with and without the LenVM
                        (its parts: lifebench_tasks, _arms, _scoring, _cells, _report)
    tradeoff            accuracy against mean tokens: LenVM tilting (a beta sweep) vs. a hard token budget
    length_tokens       the tokens that most often make a generation longer or shorter
    visualize           predicted vs. true remaining length along one completion (PNG + standalone HTML)
"""

EVALS = {
    "length_prediction": "LenVM vs. prompt-only baselines at predicting answer length (MRE, MAE, tau, online)",
    "lifebench": "token-level LIFEBench (Equal To / At Most / At Least) with and without LenVM guidance",
    "tradeoff": "task accuracy against mean tokens: LenVM tilting (beta sweep) vs. a hard token budget",
    "length_tokens": "tokens that most often shift the expected length up or down",
    "visualize": "per-token predicted vs. true remaining length of one completion (PNG + HTML)",
}
