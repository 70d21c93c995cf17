"""LengthShapedGRPOTrainer: GRPO with a dense, per-token length term from a frozen LenVM.

The only change w.r.t. ``trl.GRPOTrainer`` is ``_generate_and_score_completions``: it calls the parent, runs
the frozen critic on prompt + completion and returns ``advantages`` of shape (B, T) instead of (B,). GRPO's
loss broadcasts either shape for every ``loss_type``; the output is buffered, so with
``num_iterations > 1`` the critic runs once per generation. Everything else is inherited unchanged.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from ..critic import LengthCritic, terminated_rows
from ..returns import discounted_cumsum, length_advantages, potential_shaping, value_to_remaining
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
        if critic.tokenizer is not None:
            critic.check_tokenizer(self._tokenizer)
        g = self.args.length_gamma
        if g is not None and abs(g - critic.gamma) > 1e-12 and not self.args.force_length_gamma:
            raise ValueError(f"length_gamma={g} differs from the critic's training gamma {critic.gamma}; its values "
                             "only mean a length return at that gamma. Drop length_gamma or set force_length_gamma.")
        self.length_gamma = g if g is not None else critic.gamma
        critic.batch_size = self.args.critic_batch_size
        # Prepared like TRL prepares its frozen reference model.
        if self.is_deepspeed_enabled:
            critic.model = prepare_deepspeed(critic.model, self.accelerator)
        elif self.is_fsdp_enabled:
            critic.model = prepare_fsdp(critic.model, self.accelerator)
        else:
            critic.model = self.accelerator.prepare_model(critic.model, evaluation_mode=True)
        self.critic = critic

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        prompt_ids, prompt_mask = output["prompt_ids"], output["prompt_mask"]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = completion_mask.float()
        if "tool_mask" in output:  # tool outputs are not policy actions
            mask = mask * output["tool_mask"].float()
        terminated = terminated_rows(completion_ids, completion_mask, self.eos_token_ids)

        values = self.critic.completion_values(prompt_ids, prompt_mask, completion_ids, completion_mask)
        if self.args.length_shaping == "advantage":
            term = length_advantages(values, completion_mask, terminated, self.length_gamma,
                                     self.args.length_gae_lambda)
        else:
            term = discounted_cumsum(potential_shaping(values, completion_mask, terminated, self.length_gamma),
                                     self.length_gamma)
        term = term.float() * mask
        if not self.args.bootstrap_truncated:
            term = term * terminated[:, None]
        if self.args.whiten_length_advantages or self.args.center_length_advantages:
            term = normalize_length_term(term, mask, lambda x: self.accelerator.reduce(x, reduction="sum"),
                                         scale=self.args.whiten_length_advantages,
                                         center=self.args.center_length_advantages)

        advantages = output["advantages"]
        if advantages.dim() == 1:
            advantages = advantages[:, None]
        output["advantages"] = advantages + self.args.length_coef * term

        mode = "train" if self.model.training else "eval"
        tokens = mask.sum().clamp(min=1)
        self._metrics[mode]["length/term_mean"].append(((term * mask).sum() / tokens).item())
        self._metrics[mode]["length/term_abs_mean"].append(((term.abs() * mask).sum() / tokens).item())
        boundary = value_to_remaining(values[:, 0], self.length_gamma)
        self._metrics[mode]["length/predicted_remaining_at_prompt"].append(boundary.mean().item())
        self._metrics[mode]["length/terminated_share"].append(terminated.float().mean().item())
        return output


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
