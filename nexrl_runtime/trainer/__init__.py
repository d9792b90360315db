"""Trainers: turn a Batch of trajectories into optimizer steps on the policy."""

from __future__ import annotations

from nexrl_runtime.trainer.base import LossNorm, Trainer
from nexrl_runtime.trainer.collate import TensorBatch, collate
from nexrl_runtime.trainer.grpo import GRPOTrainer
from nexrl_runtime.trainer.sft import SFTTrainer

TRAINERS: dict[str, type[Trainer]] = {"grpo": GRPOTrainer, "sft": SFTTrainer}


__all__ = [
    "TRAINERS",
    "GRPOTrainer",
    "LossNorm",
    "SFTTrainer",
    "TensorBatch",
    "Trainer",
    "collate",
]
