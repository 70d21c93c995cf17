"""LenVM inside RL training: length-shaped GRPO."""

from .config import LengthShapedGRPOConfig
from .trainer import LengthShapedGRPOTrainer

__all__ = ["LengthShapedGRPOConfig", "LengthShapedGRPOTrainer"]
