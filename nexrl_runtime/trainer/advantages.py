"""Advantages: the registry of estimators a trainer names (`Trainer.advantage`), and GRPO's, where
each reward is measured against the other samples of its prompt (its group).

The in-process trainers and the training service's client both compute advantages here, through
`compute_advantages`, so a trainer class (built-in or a recipe's `file.py:Class`) gets the same
advantages in either mode. A recipe adds an estimator with `@register_advantage("name")` in its
trainer file and sets `advantage = "name"` on its class.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import torch
from torch import Tensor

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.types import Batch

AdvantageScale = Literal["group", "batch", "none"]
# (batch, trainer config) -> (per-trajectory advantages [N], batch-level metrics)
AdvantageFn = Callable[[Batch, TrainerConfig], tuple[Tensor, dict[str, float]]]
ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register `fn` as the advantage estimator `name`. A name is taken once (the same
    function loaded again, e.g. its recipe file re-imported, replaces itself)."""

    def add(fn: AdvantageFn) -> AdvantageFn:
        old = ADVANTAGES.get(name, fn)
        if (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"advantage estimator {name!r} is already registered ({ADVANTAGES[name]!r})")
        ADVANTAGES[name] = fn
        return fn

    return add


def compute_advantages(name: str, batch: Batch, config: TrainerConfig) -> tuple[Tensor, dict[str, float]]:
    """Advantages [N] and metrics of `batch` from the estimator registered as `name`."""
    fn = ADVANTAGES.get(name)
    if fn is None:
        raise KeyError(f"no advantage estimator {name!r}; registered: {sorted(ADVANTAGES)}")
    return fn(batch, config)


def _group_index(group_ids: Sequence[Hashable] | Tensor) -> Tensor:
    """Map arbitrary group ids (strings, ints, a tensor) to dense ints 0..G-1, in order of appearance."""
    if isinstance(group_ids, Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].flatten()
    dense: dict[Hashable, int] = {}
    return torch.tensor([dense.setdefault(g, len(dense)) for g in group_ids], dtype=torch.long)


def group_advantages(
    rewards: Tensor,
    group_ids: Sequence[Hashable] | Tensor,
    scale: AdvantageScale = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Per-sample advantage `reward - mean(group)`, divided by `std(group) + eps` (scale="group"),
    by `std(all rewards) + eps` (scale="batch") or left unscaled (scale="none").

    Stds are the unbiased (n-1) estimate, as in TRL and verl; a group of one sample, or of identical
    rewards, gets advantage exactly 0 (no signal), whatever eps is.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if len(group_ids) != rewards.numel():
        raise ValueError(f"{len(group_ids)} group ids for {rewards.numel()} rewards; need one per reward")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    idx = _group_index(group_ids).to(r.device)
    num_groups = int(idx.max()) + 1 if idx.numel() else 0

    def per_group(values: Tensor, reduce: str) -> Tensor:
        init = {"sum": 0.0, "amax": -torch.inf, "amin": torch.inf}[reduce]
        out = torch.full((num_groups,), init, dtype=r.dtype, device=r.device)
        return out.scatter_reduce(0, idx, values, reduce=reduce)

    count = per_group(torch.ones_like(r), "sum")
    centered = r - (per_group(r, "sum") / count)[idx]
    # Exact comparison: the mean of identical floats can round off the value, leaving ~1e-17 noise.
    flat = (per_group(r, "amax") == per_group(r, "amin"))[idx]

    if scale == "group":
        var = per_group(centered**2, "sum") / (count - 1).clamp(min=1)
        adv = centered / (var.sqrt()[idx] + eps)
    elif scale == "batch":
        batch_std = r.std() if r.numel() > 1 else r.new_zeros(())
        adv = centered / (batch_std + eps)
    else:
        adv = centered
    return torch.where(flat, torch.zeros_like(adv), adv)


@register_advantage("none")
def no_advantages(batch: Batch, config: TrainerConfig) -> tuple[Tensor, dict[str, float]]:
    """All zeros and no metrics (SFT)."""
    return torch.zeros(len(batch)), {}


@register_advantage("grpo")
def grpo_advantages(batch: Batch, config: TrainerConfig) -> tuple[Tensor, dict[str, float]]:
    """Group advantages (`trainer.grpo.scale_rewards`) and the batch's reward/advantage/length/lag metrics."""
    rewards = torch.tensor(batch.rewards, dtype=torch.float32)
    adv = group_advantages(rewards, batch.group_ids, config.grpo.scale_rewards)
    lengths = torch.tensor([t.response_length for t in batch.trajectories], dtype=torch.float32)
    metrics = {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std(correction=0).item(),
        "reward_min": rewards.min().item(),
        "reward_max": rewards.max().item(),
        "adv_mean": adv.mean().item(),
        "adv_std": adv.std(correction=0).item(),
        "adv_abs_mean": adv.abs().mean().item(),
        # Trajectories in groups of equal rewards: they contribute no policy gradient.
        "zero_adv_frac": (adv == 0).float().mean().item(),
        "response_length_mean": lengths.mean().item(),
    }
    current = batch.metadata.get("policy_version")
    if current is not None:
        lag = float(current) - torch.tensor(batch.policy_versions, dtype=torch.float32)
        metrics.update(version_lag_mean=lag.mean().item(), version_lag_max=lag.max().item())
    return adv, metrics
