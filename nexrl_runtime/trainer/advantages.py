"""GRPO advantages: each reward measured against the other samples of its prompt (its group)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch
from torch import Tensor

AdvantageScale = Literal["group", "batch", "none"]


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
