"""TrainingServiceTrainer: the controller's Trainer interface, with the model and optimizer in a training
service. It batches exactly like the in-process Trainer (same collate, mini-batches, epochs) and
sends each mini-batch as one forward_backward + optim_step.

Datums whose advantage is 0 are not sent when the loss has only the advantage term (GRPO without
KL or entropy): they add exactly zero to it. The mini-batch's full token/sequence counts still go
along as the loss norm, so loss and update equal the in-process trainer's on the same batch.
Per-token metrics other than loss/pg_loss/clip_frac then cover the sent datums only.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer.collate import TensorBatch, collate
from nexrl_runtime.trainer.grpo import grpo_prepare
from nexrl_runtime.trainer_service.api import (
    ForwardBackwardRequest,
    Health,
    Norm,
    SavedResponse,
    datums_from_rows,
    none_to_nan,
)
from nexrl_runtime.trainer_service.client import TrainerClient
from nexrl_runtime.types import Batch

LOSSES = ("grpo", "sft")  # 'sft' is the cross-entropy loss


def kept_rows(data: TensorBatch, drop_zero_advantage: bool) -> list[int]:
    """Rows worth sending: all, or those with a non-zero advantage."""
    if not drop_zero_advantage:
        return list(range(len(data)))
    return (data.advantages != 0).nonzero().flatten().tolist()


class TrainingServiceTrainer:
    """GRPO or cross-entropy (`config.type` 'grpo' / 'sft') on a training service."""

    def __init__(self, client: TrainerClient, config: TrainerConfig, pad_token_id: int) -> None:
        if config.type not in LOSSES:
            raise ConfigError(
                f"trainer.type: {config.type!r} cannot run in a training service; use one of {list(LOSSES)}"
            )
        self.client = client
        self.config = config
        self.pad_token_id = pad_token_id
        self.global_step = 0  # completed train_step calls, as in Trainer
        self.dropped_zero_adv = 0  # datums not sent, over all steps

    @property
    def drops_zero_advantage(self) -> bool:
        grpo = self.config.grpo
        return self.config.type == "grpo" and grpo.kl_coef == 0 and grpo.entropy_coef == 0

    def check_service(self, health: Health) -> None:
        """Refuse a service whose optimizer differs from this config's: the update would not be ours."""
        if health.optim != self.config.optim:
            raise ConfigError(
                f"trainer.optim: {self.config.optim.model_dump()} differs from the training service's "
                f"optimizer {health.optim.model_dump()}; start the service with the same recipe"
            )
        if self.config.grpo.kl_coef > 0 and not health.has_reference:
            raise ConfigError(f"trainer.grpo.kl_coef: {self.config.grpo.kl_coef} > 0, but the training "
                              "service keeps no reference model; start it with the same recipe")

    def prepare(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        if self.config.type == "grpo":
            return grpo_prepare(batch, self.config.grpo.scale_rewards)
        return torch.zeros(len(batch)), {}

    def _update(self, mini: TensorBatch) -> tuple[dict[str, float], int]:
        """One optimizer step on the service from `mini`; returns its metrics and the rows not sent."""
        rows = kept_rows(mini, self.drops_zero_advantage)
        fb = self.client.forward_backward(
            ForwardBackwardRequest(
                loss=self.config.type,
                loss_config=self.config.grpo,
                datums=datums_from_rows(mini, rows),
                norm=Norm(num_tokens=mini.num_tokens, num_seqs=len(mini)),
            )
        )
        step = self.client.optim_step()
        metrics = none_to_nan(fb.metrics)
        metrics.update(grad_norm=math.nan if step.grad_norm is None else step.grad_norm, lr=step.lr)
        return metrics, len(mini) - len(rows)

    def train_step(self, batch: Batch) -> dict[str, float]:
        """As Trainer.train_step: `ppo_epochs` passes of mini-batches, metrics averaged over steps."""
        if not len(batch):
            raise ValueError("train_step got an empty batch")
        advantages, metrics = self.prepare(batch)
        data = collate(batch.trajectories, self.pad_token_id, advantages)
        mini_size = self.config.mini_batch_size or len(data)
        sums: dict[str, float] = {}
        updates = skipped = dropped = 0
        lr = math.nan
        for epoch in range(self.config.ppo_epochs):
            for start in range(0, len(data), mini_size):
                step_metrics, not_sent = self._update(data.slice(start, start + mini_size))
                lr = step_metrics.pop("lr")
                dropped += not_sent if epoch == 0 else 0
                skipped += not math.isfinite(step_metrics["grad_norm"])
                updates += 1
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        metrics.update({key: value / updates for key, value in sums.items()})
        metrics.update(
            lr=lr,
            num_tokens=float(data.num_tokens),
            num_seqs=float(len(data)),
            optimizer_steps=float(updates),
            skipped_steps=float(skipped),
            dropped_zero_adv=float(dropped),
        )
        self.dropped_zero_adv += dropped
        self.global_step += 1
        return metrics

    def state_dict(self) -> dict[str, Tensor]:
        """The service's current weights (fetched over HTTP), for weight sync."""
        return self.client.get_weights()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Upload weights to the service (before the first step they also become the GRPO reference)."""
        self.client.put_weights(state)

    def save_weights(self, name: str) -> SavedResponse:
        """`<service root>/weights/<name>/` in safetensors, for a sampler that reads the same disk."""
        return self.client.save_weights(name)

    def save(self, name: str | os.PathLike[str]) -> None:
        """Checkpoint (model + optimizer) on the service under `name`; names are single path segments."""
        self.client.save_checkpoint(os.fspath(name))

    def load(self, name: str | os.PathLike[str]) -> None:
        self.client.load_checkpoint(os.fspath(name))

    def close(self) -> None:
        self.client.close()
