"""Trajectories -> right-padded tensors a causal LM can train on, plus the slicing used for
mini/micro-batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from nexrl_runtime.types import Trajectory


@dataclass(frozen=True)
class TensorBatch:
    """Padded [B, T] tensors aligned to tokens, and one advantage per sequence [B]."""

    input_ids: Tensor  # long, pad_token_id after each sequence
    attention_mask: Tensor  # long, 1 on real tokens
    loss_mask: Tensor  # float, 1 on trained-on tokens; always 0 at t=0 (no logits predict it)
    old_logprobs: Tensor  # float, sampling logprob of each token, 0 where loss_mask is 0
    advantages: Tensor  # float [B]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        """Trained-on tokens: the token-mean loss normaliser."""
        return int(self.loss_mask.sum().item())

    def slice(self, start: int, stop: int) -> TensorBatch:
        """Rows start:stop, with columns that are padding in every kept row trimmed off the right."""
        width = max(int(self.attention_mask[start:stop].sum(-1).max().item()), 1) if stop > start else 0

        def cut(v: Tensor) -> Tensor:
            return v[start:stop] if v.dim() == 1 else v[start:stop, :width]

        return TensorBatch(**{f.name: cut(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> TensorBatch:
        return TensorBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate(
    trajectories: Sequence[Trajectory],
    pad_token_id: int,
    advantages: Sequence[float] | Tensor | None = None,
) -> TensorBatch:
    """Right-pad trajectories (already truncated upstream) to the longest one.

    `advantages` gives one value per trajectory (default 0, e.g. for SFT). A loss_mask of 1 at
    position 0 is dropped: nothing predicts the first token.
    """
    if not trajectories:
        raise ValueError("cannot collate an empty list of trajectories")
    n, width = len(trajectories), max(max(len(t.tokens) for t in trajectories), 1)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width), dtype=torch.float32)
    old_logprobs = torch.zeros((n, width), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        k = len(t.tokens)
        input_ids[i, :k] = torch.tensor(t.tokens, dtype=torch.long)
        attention_mask[i, :k] = 1
        loss_mask[i, :k] = torch.tensor(t.loss_mask, dtype=torch.float32)
        old_logprobs[i, :k] = torch.tensor(t.logprobs, dtype=torch.float32)
    loss_mask[:, 0] = 0.0
    old_logprobs *= loss_mask
    if advantages is None:
        adv = torch.zeros(n, dtype=torch.float32)
    else:
        adv = torch.as_tensor(advantages, dtype=torch.float32).detach().cpu().flatten()
        if adv.numel() != n:
            raise ValueError(f"got {adv.numel()} advantages for {n} trajectories; need one each")
    return TensorBatch(input_ids, attention_mask, loss_mask, old_logprobs, adv)
