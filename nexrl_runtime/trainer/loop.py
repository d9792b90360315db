"""The one train_step loop: the in-process Trainer (and its FSDP ranks) and the training service's
client both run it, differing only in how one optimizer step and the logprob recompute are done."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import ClassVar

from torch import Tensor

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer.advantages import compute_advantages
from nexrl_runtime.trainer.collate import TensorBatch, collate
from nexrl_runtime.types import Batch


def with_old_logprobs(data: TensorBatch, recomputed: Tensor) -> tuple[TensorBatch, dict[str, float]]:
    """`data` with `recomputed` [B, T] as its old logprobs (on trained tokens), and how far the
    sampled ones were from them: mean and max |sampled - recomputed| over trained tokens."""
    mask = data.loss_mask
    new = recomputed.to(data.old_logprobs).detach() * mask
    gap = (data.old_logprobs - new).abs() * mask
    count = max(float(mask.sum()), 1.0)
    metrics = {
        "old_logprob_diff_mean": float(gap.sum()) / count,
        "old_logprob_diff_max": float(gap.max()) if gap.numel() else 0.0,
    }
    return replace(data, old_logprobs=new), metrics


class TrainLoop(ABC):
    """`train_step` over `update` (one optimizer step on a mini-batch) and `sequence_logprobs`."""

    # The trainer/advantages.py estimator this trainer's advantages come from.
    advantage: ClassVar[str] = "none"

    config: TrainerConfig
    pad_token_id: int
    global_step: int

    def prepare(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Per-trajectory advantages [N] and batch-level metrics, from the `advantage` estimator."""
        return compute_advantages(self.advantage, batch, self.config)

    @abstractmethod
    def update(self, mini: TensorBatch) -> dict[str, float]:
        """One optimizer step on `mini`: its metrics, with `grad_norm` and the `lr` it stepped with."""

    @abstractmethod
    def sequence_logprobs(self, data: TensorBatch) -> Tensor:
        """[B, T] logprobs of `data`'s tokens under the current policy, no grad, in micro-batches."""

    def begin_step(self) -> None:  # noqa: B027 (a hook; most loops need nothing here)
        """Called first in each train_step (the in-process trainer puts its model in train mode)."""

    def train_step(self, batch: Batch) -> dict[str, float]:
        """Train on `batch` in mini-batches of `mini_batch_size` trajectories (one optimizer step
        each, in order), repeated `ppo_epochs` times. Metrics are averaged over optimizer steps
        (`lr` too: the mean lr of the step's updates)."""
        if not len(batch):
            raise ValueError("train_step got an empty batch")
        self.begin_step()
        advantages, metrics = self.prepare(batch)
        data = collate(batch.trajectories, self.pad_token_id, advantages)
        if self.config.recompute_old_logprobs:
            data, gap = with_old_logprobs(data, self.sequence_logprobs(data))
            metrics.update(gap)
        mini_size = self.config.mini_batch_size or len(data)
        sums: dict[str, float] = {}
        updates = skipped = 0
        for _ in range(self.config.ppo_epochs):
            for start in range(0, len(data), mini_size):
                step_metrics = self.update(data.slice(start, start + mini_size))
                skipped += not math.isfinite(step_metrics["grad_norm"])
                updates += 1
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        metrics.update({key: value / updates for key, value in sums.items()})
        metrics.update(
            num_tokens=float(data.num_tokens),
            num_seqs=float(len(data)),
            optimizer_steps=float(updates),
            skipped_steps=float(skipped),
        )
        self.global_step += 1
        return metrics
