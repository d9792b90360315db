"""Learning-rate schedules (`trainer.lr_schedule`): a pure factor per optimizer step, applied with
torch's LambdaLR so its state saves and restores with the optimizer's."""

from __future__ import annotations

import math

import torch

from nexrl_runtime.config.schema import LRScheduleConfig


def lr_factor(step: int, cfg: LRScheduleConfig) -> float:
    """The multiplier of `optim.lr` for optimizer step `step` (0-based).

    Warmup: steps 0..W-1 ramp linearly to 1 ((step+1)/W). Then, over `decay_steps` steps, `linear`
    and `cosine` go from 1 to `min_lr_ratio` and stay there; `constant` stays at 1.
    """
    warmup = cfg.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if cfg.kind == "constant":
        return 1.0
    decay = cfg.decay_steps or 1
    progress = min((step - warmup) / decay, 1.0)
    floor = cfg.min_lr_ratio
    if cfg.kind == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: LRScheduleConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `optimizer`: step k's lr is `optim.lr * lr_factor(k)`; step it once per update."""
    if cfg.kind != "constant" and cfg.decay_steps is None:
        raise ValueError(
            f"trainer.lr_schedule.decay_steps is required for kind={cfg.kind!r} (the recipe loader "
            "derives it from total_steps; a TrainerConfig built by hand must set it)"
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
