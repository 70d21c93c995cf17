"""An untrained LenVM: the backbone with a freshly initialised value head, saved before any training.

The control for "is the decoding signal the critic's?": run it as one more critic of
``python -m evals.experiments.lifebench_critics`` (or ``lenvm eval ... --critic DIR``); what it adds over
``rules_only`` is what any value head adds, trained or not. The head's initialisation is set by ``--seed``, so three
seeds give a family (``untrained_s0`` ... ``untrained_s2``) beside three trained critics. ``--gamma`` should be the
trained critics' (the quickstart's auto gamma on the built-in prompts is 0.9821718891880378): the rules turn a
target into a value with it.

    python -m evals.experiments.untrained_critic --gamma 0.9821718891880378 --seed 0 \
        --output_dir lenvm_runs/untrained/untrained_s0/model
"""

from __future__ import annotations

import argparse
from pathlib import Path


def save_untrained_critic(output_dir: str | Path, gamma: float, seed: int = 0, backbone: str | None = None) -> Path:
    """Save ``backbone`` (the embedded default when None) + a value head initialised under ``seed``, with its
    tokenizer, in the LenVM layout that ``LengthCritic.from_pretrained`` loads."""
    import torch
    from transformers import AutoTokenizer

    from lenvm_rl.defaults import resolve_model
    from lenvm_rl.modeling import LengthValueModel

    name = resolve_model(backbone)
    model = LengthValueModel.from_backbone(name, gamma=gamma)
    with torch.random.fork_rng():  # the backbone's weights are loaded; only the head is drawn, from this seed
        torch.manual_seed(seed)
        for layer in (model.v_head.fc, model.v_head.summary):
            layer.reset_parameters()
    out = Path(output_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(name).save_pretrained(out)
    return out


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output_dir", required=True, help="where the critic is saved (a LenVM folder)")
    p.add_argument("--gamma", type=float, required=True, help="the trained critics' gamma (their lenvm_config.json)")
    p.add_argument("--seed", type=int, default=0, help="sets the head's initial weights")
    p.add_argument("--backbone", default=None, help="hub id or path; default: the embedded SmolLM2-135M-Instruct")
    a = p.parse_args(argv)
    out = save_untrained_critic(a.output_dir, a.gamma, a.seed, a.backbone)
    print(f"untrained critic (seed {a.seed}, gamma {a.gamma}) saved to {out}")
    return out


if __name__ == "__main__":
    main()
