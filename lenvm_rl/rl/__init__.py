"""LenVM inside RL training: length-shaped GRPO (DESIGN section 5)."""

from .config import LengthShapedGRPOConfig
from .trainer import LengthShapedGRPOTrainer

__all__ = ["LengthShapedGRPOConfig", "LengthShapedGRPOTrainer"]
