"""Trainers: turn a Batch of trajectories into optimizer steps on the policy."""

from __future__ import annotations

import importlib

from nexrl_runtime.trainer.base import LossNorm, Trainer
from nexrl_runtime.trainer.collate import TensorBatch, collate
from nexrl_runtime.trainer.grpo import GRPOTrainer
from nexrl_runtime.trainer.sft import SFTTrainer

TRAINERS: dict[str, type[Trainer]] = {"grpo": GRPOTrainer, "sft": SFTTrainer}


def trainer_class(name: str) -> type[Trainer]:
    """Resolve `TrainerConfig.type`: a TRAINERS key or 'package.module:ClassName'."""
    if name in TRAINERS:
        return TRAINERS[name]
    module_name, sep, class_name = name.partition(":")
    if not sep:
        raise ValueError(f"unknown trainer {name!r}: use one of {sorted(TRAINERS)} or 'module:ClassName'")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise ValueError(f"{name!r} does not name a Trainer subclass")
    return cls


__all__ = [
    "TRAINERS",
    "GRPOTrainer",
    "LossNorm",
    "SFTTrainer",
    "TensorBatch",
    "Trainer",
    "collate",
    "trainer_class",
]
