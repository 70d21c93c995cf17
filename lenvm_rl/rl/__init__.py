"""LenVM inside RL training: length-shaped GRPO and length rewards.

The trainer loads lazily, so that a recipe naming ``lenvm_rl.rl.rewards.<reward>`` by dotted path does not
import GRPO (and its critic, vision and TRL trainer modules) with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_NAME_TO_MODULE = {"LengthShapedGRPOConfig": "config", "LengthShapedGRPOTrainer": "trainer"}
__all__ = ["LengthShapedGRPOConfig", "LengthShapedGRPOTrainer"]


def __getattr__(name: str):
    module = _NAME_TO_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .config import LengthShapedGRPOConfig
    from .trainer import LengthShapedGRPOTrainer
