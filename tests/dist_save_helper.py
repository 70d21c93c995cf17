"""Train, save and gather a LenVM under `accelerate launch` (FSDP or DDP on CPU, gloo); used by
tests/test_distributed_save.py:

    accelerate launch --config_file CONFIG --num_processes 2 tests/dist_save_helper.py INIT OUT

writes OUT/ckpt (``trainer.save_model``, the path under test) and, from rank 0, OUT/trained.pt: the full state
dict the processes hold after training, gathered by accelerate (the weights the checkpoint must carry).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer
from tests.train_helpers import lengths_dataset

if __name__ == "__main__":
    init_dir, out = sys.argv[1], Path(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    args = LengthValueConfig(
        output_dir=str(out / "run"),
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=0.05,
        lr_scheduler_type="constant",
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = LengthValueTrainer(
        LengthValueModel.from_pretrained(init_dir),
        args,
        train_dataset=lengths_dataset(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out / "ckpt"))
    state = trainer.accelerator.get_state_dict(trainer.model)  # a collective: every rank calls it
    if trainer.accelerator.is_main_process:
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, out / "trained.pt")
        print(
            "[helper] distributed:",
            trainer.accelerator.distributed_type,
            "processes:",
            trainer.accelerator.num_processes,
        )
    # Wait for every rank, then close the process group ourselves: leaving it to interpreter exit lets gloo's
    # threads abort one rank ("terminate called without an active exception") once in a while.
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
