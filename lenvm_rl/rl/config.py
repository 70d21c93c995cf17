"""LengthShapedGRPOConfig: TRL's GRPOConfig plus the dense length-shaping settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

SHAPING_MODES = ("relative", "advantage")
DEFAULT_COEF = {"relative": 1.0, "advantage": 0.1}
DEFAULT_LAMBDA = {"relative": 0.8, "advantage": 1.0}


@dataclass
class LengthShapedGRPOConfig(GRPOConfig):
    r"""
    Configuration for [`LengthShapedGRPOTrainer`]: every ``GRPOConfig`` field plus the ones below.

    GRPO's task advantage (one number per completion) gets a per-token length term from a LenVM (frozen, or
    refreshed on every batch with ``critic_refresh_steps``). Both modes start from the critic's length residuals and their GAE credit

        delta_j = r + gamma V(s_{j+1}) - V(s_j),   r = -(1 - gamma),   a_ij = GAE_lambda(delta)_j

    (V = 0 after EOS; truncated rows bootstrap with the critic). ``a_ij > 0``: token j of completion i made the
    answer shorter than the critic expected.

    ``relative`` (default; see docs/rl.md): correctness-gated and centred within each prompt group,

        mu_g  = sum_{i in C_g} sum_j a_ij / sum_{i in C_g} L_i            (C_g: the correct answers of group g)
        l_ij  = 1[c_i] 1[|C_g| >= 2] clip(alpha (a_ij - mu_g), -kappa, kappa)
        A_ij  = A_task,i + l_ij                                            (no whitening)

    so the term only moves credit between the tokens of correct answers to the same prompt, sums to zero over
    them before clipping, and cannot pay a wrong or an empty answer. ``c_i`` is read from the reward function
    named by ``length_gate_reward`` in the rewards TRL gathered across processes, so groups are whole on any
    number of processes. A constant offset in the critic's values cancels (exactly at lambda 1).

    ``advantage``: ``A_ij = A_task,i + length_coef * GAE_lambda(delta)_j``, whitened over all tokens. Ungated and
    uncentred: once the policy is shorter than the frozen critic expects, every residual is positive and the
    term pays wrong and short answers alike (the README's GRPO experiment collapsed to EOS-only answers when
    centred). Kept for comparison.

    ``potential`` was removed: its discounted sum from token j telescopes to ``-V(s_j)``, the same for every
    candidate token, so it carries no length incentive (potential-based shaping is policy-invariant).

    Parameters:
        critic_model_path (`str`):
            LenVM checkpoint (``lenvm train`` output). Its vocabulary must match the policy's.
        length_shaping (`str`, *optional*, defaults to `"relative"`):
            `"relative"` or `"advantage"` (above).
        length_coef (`float` or `None`, *optional*):
            ``alpha`` of `relative` (default 1.0) or the weight of `advantage` (default 0.1); > 0 favours shorter.
        length_clip (`float`, *optional*, defaults to `0.5`):
            ``kappa`` of `relative`: the term is clipped to [-kappa, kappa] per token.
        length_gate_reward (`str` or `None`):
            Name of the reward function (as TRL names it: the function's ``__name__``) whose value says an
            answer is correct. Required by `relative`.
        length_gate_threshold (`float`, *optional*, defaults to `0.5`):
            An answer is correct when its gate reward is at least this.
        length_gamma (`float` or `None`, *optional*, defaults to `None`):
            Discount of the length return; read from the critic checkpoint. A different value is an error
            unless `force_length_gamma` is set.
        force_length_gamma (`bool`, *optional*, defaults to `False`):
            Allow a `length_gamma` that differs from the critic's training gamma.
        length_gae_lambda (`float` or `None`, *optional*):
            GAE lambda of the credit (default 0.8 for `relative`, 1.0 for `advantage`; 1.0 gives `G_j - V(s_j)`).
        whiten_length_advantages (`bool`, *optional*, defaults to `True`):
            `advantage` only: scale the term to unit std over the completion tokens of all processes.
        center_length_advantages (`bool`, *optional*, defaults to `False`):
            `advantage` only: subtract the term's mean over all completion tokens first.
        bootstrap_truncated (`bool`, *optional*, defaults to `True`):
            Bootstrap truncated completions with the critic's value of their last state. If False they take no
            part in the length term: their term is zero, and under `relative` they are neither in the gate
            (``C_g``) nor in the group mean ``mu_g``.
        critic_batch_size (`int`, *optional*, defaults to `8`):
            Rows per critic forward (the critic runs chunked).

        > Critic refresh (a critic that follows the policy)

        critic_refresh_steps (`int`, *optional*, defaults to `0`):
            After each batch (once its length term is computed with the current critic), this many optimiser
            steps of the LenVM on the batch's own Monte-Carlo targets: ``G_j = -(1 - gamma ** (L - j))`` on
            answers that ended with EOS, the one-sided censored loss of pretraining on answers cut at the length
            limit (at least ``L - j + 1`` tokens were still to come). The loss is a token mean over the batch of
            every process (gradients are summed across processes), so any number of processes ends with the same
            weights. 0 keeps the critic frozen. Checkpoints keep the refreshed critic and its optimizer
            (``critic_refresh.pt``), so ``resume_from_checkpoint`` goes on with the critic the policy was trained
            against; a checkpoint without it is refused for a refreshing run.
        critic_refresh_learning_rate (`float`, *optional*, defaults to `1e-4`):
            AdamW learning rate of the refresh; must be positive when `critic_refresh_steps > 0`.
        critic_refresh_layers (`int`, *optional*, defaults to `0`):
            Train the top this-many transformer layers of the LenVM's backbone (and its final norm) with the
            value head; 0 refreshes the head only. With a LoRA LenVM, its adapters are refreshed whatever this is.
    """

    critic_model_path: str | None = field(default=None, metadata={"help": "LenVM checkpoint dir."})
    length_shaping: str = field(
        default="relative", metadata={"help": "'relative' (gated, group-centred) or 'advantage' (ungated, whitened)."}
    )
    length_coef: float | None = field(
        default=None,
        metadata={"help": "alpha of 'relative' (default 1.0) or weight of 'advantage' (0.1); > 0 favours shorter."},
    )
    length_clip: float = field(default=0.5, metadata={"help": "kappa: per-token clip of the 'relative' term."})
    length_gate_reward: str | None = field(
        default=None, metadata={"help": "Reward function name that marks an answer correct ('relative')."}
    )
    length_gate_threshold: float = field(default=0.5, metadata={"help": "Correct when the gate reward >= this."})
    length_gamma: float | None = field(default=None, metadata={"help": "Length discount; default: the critic's."})
    force_length_gamma: bool = field(default=False, metadata={"help": "Allow a gamma other than the critic's."})
    length_gae_lambda: float | None = field(
        default=None, metadata={"help": "GAE lambda of the credit (0.8 relative, 1.0 advantage)."}
    )
    whiten_length_advantages: bool = field(default=True, metadata={"help": "'advantage': unit-std length term."})
    center_length_advantages: bool = field(default=False, metadata={"help": "'advantage': zero-mean length term."})
    bootstrap_truncated: bool = field(
        default=True, metadata={"help": "Bootstrap truncated rows with the critic (else they get no length term)."}
    )
    critic_batch_size: int = field(default=8, metadata={"help": "Rows per critic forward."})
    critic_refresh_steps: int = field(
        default=0, metadata={"help": "Optimiser steps of the LenVM on each batch's own targets (0: frozen)."}
    )
    critic_refresh_learning_rate: float = field(default=1e-4, metadata={"help": "AdamW lr of the critic refresh."})
    critic_refresh_layers: int = field(
        default=0, metadata={"help": "Top backbone layers refreshed with the head (0: the head only)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.length_shaping == "potential":
            raise ValueError(
                "length_shaping='potential' was removed: its discounted sum from token j telescopes to "
                "-V(s_j), the same for every candidate token, so it gives no length incentive. Use "
                "'relative' (with length_gate_reward) instead."
            )
        if self.length_shaping not in SHAPING_MODES:
            raise ValueError(f"length_shaping must be one of {SHAPING_MODES}, got {self.length_shaping!r}")
        if self.length_coef is None:
            self.length_coef = DEFAULT_COEF[self.length_shaping]
        if self.length_gae_lambda is None:
            self.length_gae_lambda = DEFAULT_LAMBDA[self.length_shaping]
        if not 0.0 <= self.length_gae_lambda <= 1.0:
            raise ValueError(f"length_gae_lambda must lie in [0, 1], got {self.length_gae_lambda}")
        if self.length_clip <= 0:
            raise ValueError(f"length_clip must be positive, got {self.length_clip}")
        if self.critic_batch_size < 1:
            raise ValueError("critic_batch_size must be at least 1")
        if self.critic_refresh_steps < 0:
            raise ValueError(
                f"critic_refresh_steps must be >= 0 (0 keeps the critic frozen), got {self.critic_refresh_steps}"
            )
        if self.critic_refresh_steps > 0 and not self.critic_refresh_learning_rate > 0:
            raise ValueError(
                f"critic_refresh_steps={self.critic_refresh_steps} with critic_refresh_learning_rate="
                f"{self.critic_refresh_learning_rate}: the refresh would not move the critic. Set a positive "
                "learning rate (e.g. 1e-4) or critic_refresh_steps=0 for a frozen critic."
            )
        if self.critic_refresh_layers < 0:
            raise ValueError(f"critic_refresh_layers must be >= 0 (0: the head only), got {self.critic_refresh_layers}")
        if self.length_shaping == "relative":
            if not self.length_gate_reward:
                raise ValueError(
                    "length_shaping='relative' needs length_gate_reward: the name of the reward "
                    "function that says an answer is correct (e.g. 'opposites_reward'); only correct "
                    "answers get the length term."
                )
        # A group size of 1 is refused by GRPOConfig itself ("at least 2 generations per prompt").
