"""Two shaped GRPO steps under torchrun (2 processes, gloo, groups split across them); rank 0 writes the
advantage shapes and, per step, every rank's credit, mask, gate rewards and `relative` term."""

import json
import os
import sys

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import AutoTokenizer

from lenvm_rl.critic import LengthCritic
from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer


def reward(completions, **kwargs):
    return [float(len(c) % 3) for c in completions]


class Recording(LengthShapedGRPOTrainer):
    shapes, terms = [], []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        Recording.shapes.append([list(out["advantages"].shape), list(out["completion_ids"].shape)])
        return out

    def _relative_term(self, credit, mask):
        term, gate = super()._relative_term(credit, mask)
        mine = {
            "rank": self.accelerator.process_index,
            "credit": credit.tolist(),
            "mask": mask.tolist(),
            "term": term.tolist(),
            "rewards": self._gathered_rewards[:, self._gate_index].tolist(),
        }
        Recording.terms.append(gather_object([mine]))
        return term, gate


if __name__ == "__main__":
    policy_dir, critic_dir, out_dir, result = sys.argv[1:5]
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    critic = LengthCritic.from_pretrained(critic_dir, device="cpu")
    args = LengthShapedGRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=2,
        num_generations=4,
        max_completion_length=6,
        max_steps=2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-4,
        length_gate_reward="reward",
        length_clip=0.05,
        temperature=1.0,
    )
    data = Dataset.from_list([{"prompt": f"Say {i} words."} for i in range(8)])
    trainer = Recording(
        model=policy_dir, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer, critic=critic
    )
    trainer.train()
    assert trainer.accelerator.num_processes == 2
    if int(os.environ.get("RANK", "0")) == 0:
        logged = [h["length/term_abs_mean"] for h in trainer.state.log_history if "length/term_abs_mean" in h]
        json.dump({"shapes": Recording.shapes, "term_abs_mean": logged, "terms": Recording.terms}, open(result, "w"))
    # Both ranks leave together and close the process group: a rank exiting while gloo's threads still run aborted
    # once ("terminate called without an active exception", SIGABRT) after a finished run.
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
