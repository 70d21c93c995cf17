"""LengthShapedGRPOConfig: TRL's GRPOConfig plus the dense length-shaping settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig


@dataclass
class LengthShapedGRPOConfig(GRPOConfig):
    r"""
    Configuration for [`LengthShapedGRPOTrainer`]: every ``GRPOConfig`` field plus the ones below.

    The task advantage of GRPO (one number per completion) gets a per-token length term from a frozen LenVM
    (the paper's Appendix C):

        advantage:  A_total(j) = A_task + length_coef * GAE_lambda(delta_len)(j)
        potential:  A_total(j) = A_task + length_coef * sum_k gamma^k F(j + k),  F = gamma V(s') - V(s)

    with ``delta_len = r + gamma V(s_{j+1}) - V(s_j)``, ``r = -(1 - gamma)``. ``length_coef > 0`` favours shorter
    completions. Terminated rows use V = 0 after EOS; truncated rows bootstrap with the critic.

    Parameters:
        critic_model_path (`str`):
            LenVM checkpoint (``lenvm train`` output). Its vocabulary must match the policy's.
        length_shaping (`str`, *optional*, defaults to `"advantage"`):
            `"advantage"` (GAE of the length residuals) or `"potential"` (potential-based shaping with the
            frozen critic as potential).
        length_coef (`float`, *optional*, defaults to `0.1`):
            Weight `s` of the length term; > 0 favours shorter completions, < 0 longer ones.
        length_gamma (`float` or `None`, *optional*, defaults to `None`):
            Discount of the length return; read from the critic checkpoint. A different value is an error
            unless `force_length_gamma` is set.
        force_length_gamma (`bool`, *optional*, defaults to `False`):
            Allow a `length_gamma` that differs from the critic's training gamma.
        length_gae_lambda (`float`, *optional*, defaults to `1.0`):
            GAE lambda of the `"advantage"` mode; 1.0 gives `G_j - V(s_j)`.
        whiten_length_advantages (`bool`, *optional*, defaults to `True`):
            Scale the length term to unit standard deviation over the completion tokens of all processes
            (its mean is kept: a shift would favour or penalise every token alike).
        center_length_advantages (`bool`, *optional*, defaults to `False`):
            Subtract the length term's mean over the completion tokens of all processes (before scaling). Once the
            policy is shorter than the frozen critic expects, every residual is positive; centring keeps only the
            token-to-token differences. See the GRPO experiment in the README.
        bootstrap_truncated (`bool`, *optional*, defaults to `True`):
            Bootstrap truncated completions with the critic's value of their last state; if False their
            length term is zero.
        critic_batch_size (`int`, *optional*, defaults to `8`):
            Rows per critic forward (the critic runs chunked, without gradients).
    """

    critic_model_path: str | None = field(default=None, metadata={"help": "LenVM checkpoint dir."})
    length_shaping: str = field(default="advantage", metadata={"help": "'advantage' or 'potential'."})
    length_coef: float = field(default=0.1, metadata={"help": "Weight of the length term; > 0 favours shorter."})
    length_gamma: float | None = field(default=None, metadata={"help": "Length discount; default: the critic's."})
    force_length_gamma: bool = field(default=False, metadata={"help": "Allow a gamma other than the critic's."})
    length_gae_lambda: float = field(default=1.0, metadata={"help": "GAE lambda of the 'advantage' mode."})
    whiten_length_advantages: bool = field(default=True, metadata={"help": "Unit-std length term (all processes)."})
    center_length_advantages: bool = field(default=False, metadata={"help": "Zero-mean length term (all processes)."})
    bootstrap_truncated: bool = field(default=True, metadata={"help": "Bootstrap truncated rows with the critic."})
    critic_batch_size: int = field(default=8, metadata={"help": "Rows per critic forward."})

    def __post_init__(self):
        super().__post_init__()
        if self.length_shaping not in ("advantage", "potential"):
            raise ValueError(f"length_shaping must be 'advantage' or 'potential', got {self.length_shaping!r}")
        if not 0.0 <= self.length_gae_lambda <= 1.0:
            raise ValueError(f"length_gae_lambda must lie in [0, 1], got {self.length_gae_lambda}")
        if self.critic_batch_size < 1:
            raise ValueError("critic_batch_size must be at least 1")
