"""LengthShapedGRPOTrainer: GRPO with a dense, per-token length term from a frozen LenVM.

The change w.r.t. ``trl.GRPOTrainer`` is ``_generate_and_score_completions``: it calls the parent, runs
the frozen critic on prompt + completion and returns ``advantages`` of shape (B, T) instead of (B,). GRPO's
loss broadcasts either shape for every ``loss_type``; the output is buffered, so with
``num_iterations > 1`` the critic runs once per generation. ``_calculate_rewards`` is extended only to keep
the rewards TRL gathered across processes (the ``relative`` mode's correctness gate needs whole prompt
groups). Everything else is inherited unchanged. The formulas are in :class:`LengthShapedGRPOConfig`.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from ..critic import LengthCritic, terminated_rows
from ..returns import correct_group_means, length_credit, relative_length_term, value_to_length
from ..vlm import is_processor, vision_inputs
from .config import LengthShapedGRPOConfig


class LengthShapedGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose advantages get ``length_coef *`` a per-token length term (see the config).

    Args: those of ``GRPOTrainer``, plus ``critic``: a loaded :class:`LengthCritic` (else
    ``args.critic_model_path`` is loaded).
    """

    def __init__(self, *args, critic: LengthCritic | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, LengthShapedGRPOConfig):
            raise TypeError("LengthShapedGRPOTrainer needs a LengthShapedGRPOConfig")
        if critic is None:
            if not self.args.critic_model_path:
                raise ValueError("Set critic_model_path (a LenVM checkpoint) or pass critic=LengthCritic(...).")
            critic = LengthCritic.from_pretrained(self.args.critic_model_path, device=str(self.accelerator.device))
        if critic.tokenizer is not None:  # a VLM policy's processor is checked against a VLM critic too
            critic.check_tokenizer(
                self.processing_class
                if is_processor(self.processing_class) and critic.model.is_vision
                else self._tokenizer
            )
        g = self.args.length_gamma
        if g is not None and abs(g - critic.gamma) > 1e-12 and not self.args.force_length_gamma:
            raise ValueError(
                f"length_gamma={g} differs from the critic's training gamma {critic.gamma}; its values "
                "only mean a length return at that gamma. Drop length_gamma or set force_length_gamma."
            )
        self.length_gamma = g if g is not None else critic.gamma
        critic.batch_size = self.args.critic_batch_size
        self._critic_is_vision = critic.model.is_vision  # read before the model is wrapped
        # Prepared like TRL prepares its frozen reference model.
        if self.is_deepspeed_enabled:
            critic.model = prepare_deepspeed(critic.model, self.accelerator)
        elif self.is_fsdp_enabled:
            critic.model = prepare_fsdp(critic.model, self.accelerator)
        else:
            critic.model = self.accelerator.prepare_model(critic.model, evaluation_mode=True)
        self.critic = critic
        self._gate_index = None
        if self.args.length_shaping == "relative":
            if self.args.length_gate_reward not in self.reward_func_names:
                raise ValueError(
                    f"length_gate_reward={self.args.length_gate_reward!r} is not among the reward "
                    f"functions {self.reward_func_names}; name the one that says an answer is correct."
                )
            self._gate_index = self.reward_func_names.index(self.args.length_gate_reward)
        self._gathered_rewards = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL returns the rewards of all processes (groups may span them); keep them for the gate.
        self._gathered_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._gathered_rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        prompt_ids, prompt_mask = output["prompt_ids"], output["prompt_mask"]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = completion_mask.float()
        if "tool_mask" in output:  # tool outputs are not policy actions
            mask = mask * output["tool_mask"].float()
        terminated = terminated_rows(completion_ids, completion_mask, self.eos_token_ids)

        # A VLM policy's prompts carry images: the critic reads the same pixels (same processor family).
        vision = vision_inputs(output) if self._critic_is_vision else {}
        values = self.critic.completion_values(prompt_ids, prompt_mask, completion_ids, completion_mask, **vision)
        term, gate = self._length_term(values, completion_mask, mask, terminated)

        advantages = output["advantages"]
        if advantages.dim() == 1:
            advantages = advantages[:, None]
        output["advantages"] = advantages + term

        mode = "train" if self.model.training else "eval"
        tokens = mask.sum().clamp(min=1)
        self._metrics[mode]["length/term_mean"].append(((term * mask).sum() / tokens).item())
        self._metrics[mode]["length/term_abs_mean"].append(((term.abs() * mask).sum() / tokens).item())
        # Lengths count answer tokens, EOS excluded (docs/method.md), in the prediction and the actual length alike.
        boundary = value_to_length(values[:, 0], self.length_gamma)
        self._metrics[mode]["length/predicted_remaining_at_prompt"].append(boundary.mean().item())
        self._metrics[mode]["length/terminated_share"].append(terminated.float().mean().item())
        answer_tokens = completion_mask.sum(-1) - terminated.to(completion_mask.dtype)
        self._metrics[mode]["length/actual_length"].append(answer_tokens.float().mean().item())
        if gate is not None:
            self._metrics[mode]["length/gated_share"].append(gate.float().mean().item())
        return output

    def _length_term(self, values, completion_mask, mask, terminated):
        """The per-token length term (B, T) and the ``relative`` gate (B,) (None in ``advantage``) from the
        critic's values. ``mask``: the completion tokens that are policy actions."""
        if not self.args.bootstrap_truncated:  # truncated rows take no part: no term, no gate, no group mean
            mask = mask * terminated[:, None].to(mask.dtype)
        credit = (
            length_credit(values, completion_mask, terminated, self.length_gamma, self.args.length_gae_lambda).float()
            * mask
        )
        if self.args.length_shaping == "relative":
            return self._relative_term(credit, mask)
        term = credit
        if self.args.whiten_length_advantages or self.args.center_length_advantages:
            term = normalize_length_term(
                term,
                mask,
                lambda x: self.accelerator.reduce(x, reduction="sum"),
                scale=self.args.whiten_length_advantages,
                center=self.args.center_length_advantages,
            )
        return self.args.length_coef * term, None

    def _relative_term(self, credit, mask):
        """The ``relative`` term for this process's rows, with group statistics over all processes. A row without
        a token in ``mask`` (a truncated one when not bootstrapped) is not counted as correct."""
        rewards = self._gathered_rewards[:, self._gate_index]
        row_credit = self.accelerator.gather((credit * mask).sum(-1))
        row_lengths = self.accelerator.gather(mask.sum(-1))
        correct = torch.nan_to_num(rewards, nan=-float("inf")) >= self.args.length_gate_threshold
        correct = correct.to(row_lengths.device) & (row_lengths > 0)
        mu, gate = correct_group_means(
            row_credit.double(),
            row_lengths,
            correct.to(row_credit.device),
            self.num_generations if self.model.training else self.num_generations_eval,
        )
        rows = slice(self.accelerator.process_index * len(credit), (self.accelerator.process_index + 1) * len(credit))
        mu, gate = mu[rows].to(credit), gate[rows]
        term = relative_length_term(credit, mask, mu, gate, self.args.length_coef, self.args.length_clip)
        return term, gate


def normalize_length_term(term, mask, global_sum, scale: bool = True, center: bool = False):
    """Centre (optional) and scale to unit std the length term over the completion tokens of all processes.

    ``global_sum`` sums a tensor over processes. Without ``center`` the mean is kept (see the config).
    """
    count = global_sum(mask.sum()).clamp(min=1)
    mean = global_sum((term * mask).sum()) / count
    if center:
        term, mean = (term - mean) * mask, torch.zeros_like(mean)
    if scale:
        var = global_sum((((term - mean) * mask) ** 2).sum()) / count
        term = term / (var.sqrt() + 1e-6)
    return term
