"""LengthShapedGRPOTrainer: GRPO with a dense, per-token length term from a LenVM.

The change w.r.t. ``trl.GRPOTrainer`` is ``_generate_and_score_completions``: it calls the parent, runs
the critic on prompt + completion and returns ``advantages`` of shape (B, T) instead of (B,); with
``critic_refresh_steps`` it then fits the critic to the batch's own lengths (:func:`refresh_critic`). GRPO's
loss broadcasts either shape for every ``loss_type``; the output is buffered, so with
``num_iterations > 1`` the critic runs once per generation. ``_calculate_rewards`` is extended only to keep
the rewards TRL gathered across processes (the ``relative`` mode's correctness gate needs whole prompt
groups); checkpoints also hold a refreshed critic (``critic_refresh.pt``), so ``resume_from_checkpoint`` resumes
the critic the policy was trained against. Everything else is inherited unchanged. The formulas are in :class:`LengthShapedGRPOConfig`.
"""

from __future__ import annotations

import os

import torch
from trl import GRPOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from ..critic import LengthCritic, terminated_rows
from ..data import IGNORE_INDEX
from ..layers import decoder_layers, freeze_lower_layers
from ..returns import correct_group_means, length_credit, relative_length_term, value_to_length
from ..trainer import value_loss_sums
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
        self._critic_optimizer = None
        if self.args.critic_refresh_steps > 0:
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "critic_refresh_steps > 0 is supported with plain data parallelism only (the critic's "
                    "gradients are summed across processes by hand); drop DeepSpeed / FSDP or set it to 0."
                )
            params = refreshed_parameters(critic.model, self.args.critic_refresh_layers)
            self._critic_optimizer = torch.optim.AdamW(
                params, lr=self.args.critic_refresh_learning_rate, weight_decay=0.0
            )
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
        # The critic's error at the prompt on answers that ended (tokens), before any refresh on this batch.
        ended = terminated.float()
        error = ((boundary.to(mask) - answer_tokens.to(mask)).abs() * ended).sum()
        count = self.accelerator.reduce(ended.sum(), reduction="sum")
        if count > 0:
            error = self.accelerator.reduce(error, reduction="sum") / count
            self._metrics[mode]["length/critic_prompt_abs_error"].append(error.item())
        if self._critic_optimizer is not None and self.model.training:
            # After the term is computed: the credit of this batch never comes from a critic fitted to it.
            losses = refresh_critic(
                self.critic.model,
                self._critic_optimizer,
                torch.cat([prompt_ids, completion_ids], 1),
                torch.cat([prompt_mask, completion_mask], 1),
                prompt_ids.shape[1],
                completion_mask,
                terminated,
                self.length_gamma,
                self.args.critic_refresh_steps,
                lambda x: self.accelerator.reduce(x, reduction="sum"),
                self.args.critic_batch_size,
            )
            self._metrics[mode]["length/critic_refresh_loss_first"].append(losses[0])
            self._metrics[mode]["length/critic_refresh_loss_last"].append(losses[-1])
        return output

    # A refreshed critic is training state, like the optimizer: a checkpoint keeps it and a resumed run reloads it.
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._critic_optimizer is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            torch.save(refresh_state(self.critic.model, self._critic_optimizer), os.path.join(folder, REFRESH_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self._critic_optimizer is not None and checkpoint is not None:
            path = os.path.join(checkpoint, REFRESH_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{checkpoint} has no {REFRESH_FILE}: it was saved without a refreshed critic (critic_refresh_steps "
                    "0, or an older version), so resuming would pair the policy with the unrefreshed critic. Resume "
                    "with the settings it was saved with, or start the run again."
                )
            load_refresh_state(self.critic.model, self._critic_optimizer, torch.load(path, weights_only=True))

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


# ----------------------------------------------------------------------------------------- critic refresh
def refreshed_parameters(model, top_layers: int = 0) -> list:
    """Mark the parameters a refresh trains (everything else stays frozen) and return them: the value head, plus
    the top ``top_layers`` transformer layers and the final norm, or the LoRA adapters of a LoRA LenVM."""
    model.requires_grad_(False)
    if model.is_peft:
        for name, p in model.backbone.named_parameters():
            p.requires_grad_("lora_" in name)
    elif top_layers:
        n = len(decoder_layers(model.backbone))
        if top_layers > n:
            raise ValueError(f"critic_refresh_layers={top_layers} but the critic's backbone has {n} layers")
        freeze_lower_layers(model, n - top_layers)
    model.v_head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


REFRESH_FILE = "critic_refresh.pt"


def refresh_state(model, optimizer) -> dict:
    """The refreshed parameters (by name) and the refresh optimizer's state: what a resumed run needs."""
    model = getattr(model, "module", model)  # DDP-wrapped
    params = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {"params": params, "optimizer": optimizer.state_dict()}


def load_refresh_state(model, optimizer, state: dict) -> None:
    model = getattr(model, "module", model)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(named) != set(state["params"]):
        raise ValueError(
            "the checkpoint's refreshed critic parameters differ from this run's "
            f"({len(state['params'])} saved, {len(named)} refreshed now): critic_refresh_layers or the critic changed "
            "since it was saved; resume with the same settings and critic."
        )
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(state["params"][n].to(p))
    optimizer.load_state_dict(state["optimizer"])


def refresh_targets(completion_mask: torch.Tensor, terminated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo targets of the states ``s_0 .. s_T`` of right-padded completions, (B, T + 1) each, as in
    pretraining (:mod:`lenvm_rl.data`): ``labels`` holds the ``L - j`` tokens still to come at ``s_j`` of an answer
    that ended (0 at its EOS), ``lower_bounds`` the ``L - j + 1`` tokens at least still to come in an answer cut
    after L tokens; -100 elsewhere."""
    lengths = completion_mask.long().sum(-1, keepdim=True)
    j = torch.arange(completion_mask.shape[1] + 1, device=completion_mask.device)[None]
    remaining = lengths - j
    inside = remaining >= 0
    ended = terminated.bool()[:, None]
    labels = torch.where(inside & ended, remaining, IGNORE_INDEX)
    lower_bounds = torch.where(inside & ~ended, remaining + 1, IGNORE_INDEX)
    return labels, lower_bounds


def refresh_critic(
    model,
    optimizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    completion_mask: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    steps: int,
    global_sum=lambda x: x,
    chunk: int = 8,
) -> list[float]:
    """``steps`` optimiser steps of a LenVM on these rows' own targets (:func:`refresh_targets`); returns the loss
    before each step.

    Rows are left-padded prompts (``prompt_width`` columns) followed by right-padded completions. The loss is
    pretraining's (:func:`lenvm_rl.trainer.value_loss_sums`): squared error on exact targets, the one-sided hinge
    on censored ones, divided by the trained positions of every process. ``global_sum`` sums a tensor over
    processes; the gradients are summed with it before each step, so every process takes the same step and
    two processes end with the weights one process reaches on all rows.
    """
    labels, bounds = refresh_targets(completion_mask, terminated)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    count = global_sum(((labels != IGNORE_INDEX).sum() + (bounds != IGNORE_INDEX).sum()).float()).clamp(min=1)
    device = next(model.parameters()).device
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=False)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, input_ids.shape[0], chunk):
            rows = slice(start, start + chunk)
            value = model(input_ids=input_ids[rows].to(device), attention_mask=attention_mask[rows].to(device)).value
            value = value[:, prompt_width - 1 :]
            value = value.to(torch.promote_types(value.dtype, torch.float32))  # a bf16 critic's loss in fp32
            squared, _ = value_loss_sums(value, labels[rows].to(device), bounds[rows].to(device), gamma)
            (squared / count.to(device, squared.dtype)).backward()
            total += squared.detach().double()
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        flat = global_sum(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()
        optimizer.step()
        losses.append(float(global_sum(total) / count.double()))
    optimizer.zero_grad(set_to_none=True)
    return losses
