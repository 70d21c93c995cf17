"""One optimizer step of LengthValueTrainer from a saved initial model; used in-process and under torchrun."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

LR = 0.5


def lengths_dataset(tokenizer):
    """Four completions of very different lengths, so token-mean and sequence-mean losses differ."""
    from datasets import Dataset

    from lenvm_rl.data import build_example

    rows = []
    for i, length in enumerate([2, 30, 5, 60]):
        completion = [300 + 7 * j for j in range(length - 1)] + [tokenizer.eos_token_id]
        rows.append(build_example([10 + i, 11, 12], completion, max_length=None))
    return Dataset.from_list(rows)


def one_step(
    init_dir: str, out_dir: str, batch_size: int, grad_accum: int, tokenizer, dataset=None, **config
) -> LengthValueModel:
    """One SGD step from ``init_dir`` on ``dataset`` (default :func:`lengths_dataset`); ``config`` adds
    LengthValueConfig fields."""
    model = LengthValueModel.from_pretrained(init_dir)
    args = LengthValueConfig(
        output_dir=out_dir,
        overwrite_output_dir=True,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_steps=1,
        optim="sgd",
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        **config,
    )
    train = lengths_dataset(tokenizer) if dataset is None else dataset
    LengthValueTrainer(model, args, train_dataset=train, processing_class=tokenizer).train()
    return model


if __name__ == "__main__":  # torchrun --nproc_per_node 2 tests/train_helpers.py INIT OUT RESULT
    from transformers import AutoTokenizer

    init_dir, out_dir, result = sys.argv[1:4]
    model = one_step(init_dir, out_dir, batch_size=2, grad_accum=1, tokenizer=AutoTokenizer.from_pretrained(init_dir))
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, Path(result))
