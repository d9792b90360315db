"""TrainingServiceTrainer: the controller's Trainer interface, with the model and optimizer in a training
service. It runs the in-process Trainer's own loop (trainer/loop.py: advantages from the registry of
`trainer.type`'s class, same collate, mini-batches, epochs) and sends each mini-batch as one
forward_backward + optim_step; `recompute_old_logprobs` asks the service's compute_logprobs.

Datums whose advantage is 0 are not sent when the loss has only the advantage term (GRPO's own
loss without KL or entropy): they add exactly zero to it. The mini-batch's full token/sequence
counts still go along as the loss norm, so loss and update equal the in-process trainer's on the
same batch. Per-token metrics other than loss/pg_loss/clip_frac then cover the sent datums only.
"""

from __future__ import annotations

import json
import math
import os

import torch
from torch import Tensor

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.registry import resolve_class
from nexrl_runtime.trainer import TRAINERS, GRPOTrainer, Trainer
from nexrl_runtime.trainer.collate import TensorBatch
from nexrl_runtime.trainer.loop import TrainLoop
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

SERVICE_RECORD = "trainer.json"  # in a run checkpoint: which service checkpoint holds the trainer


def kept_rows(data: TensorBatch, drop_zero_advantage: bool) -> list[int]:
    """Rows worth sending: all, or those with a non-zero advantage."""
    if not drop_zero_advantage:
        return list(range(len(data)))
    return (data.advantages != 0).nonzero().flatten().tolist()


class TrainingServiceTrainer(TrainLoop):
    """`config.type` (a registry name or a recipe's `file.py:Class`, resolved against `recipe_dir`)
    on a training service that was started with the same recipe, so it has that loss."""

    def __init__(
        self, client: TrainerClient, config: TrainerConfig, pad_token_id: int, recipe_dir: str = "."
    ) -> None:
        self.trainer_cls: type[Trainer] = resolve_class(config.type, TRAINERS, Trainer, recipe_dir)
        self.advantage = self.trainer_cls.advantage  # type: ignore[misc]
        self.client = client
        self.config = config
        self.pad_token_id = pad_token_id
        self.global_step = 0  # completed train_step calls, as in Trainer
        self.dropped_zero_adv = 0  # datums not sent, over all steps

    @property
    def drops_zero_advantage(self) -> bool:
        grpo = self.config.grpo
        own_loss = issubclass(self.trainer_cls, GRPOTrainer) and (
            self.trainer_cls.compute_loss is GRPOTrainer.compute_loss
        )
        return own_loss and grpo.kl_coef == 0 and grpo.entropy_coef == 0

    def check_service(self, health: Health) -> None:
        """Refuse a service whose optimizer, lr schedule or losses differ from this config's: the
        update would not be ours."""
        if health.optim != self.config.optim:
            raise ConfigError(
                f"trainer.optim: {self.config.optim.model_dump()} differs from the training service's "
                f"optimizer {health.optim.model_dump()}; start the service with the same recipe"
            )
        if health.lr_schedule != self.config.lr_schedule:
            raise ConfigError(
                f"trainer.lr_schedule: {self.config.lr_schedule.model_dump()} differs from the training "
                f"service's {health.lr_schedule.model_dump()}; start the service with the same recipe"
            )
        if self.config.type not in health.losses:
            raise ConfigError(
                f"trainer.type: {self.config.type!r} is not a loss of the training service (it has "
                f"{health.losses}); start the service with the same recipe"
            )
        if self.config.grpo.kl_coef > 0 and not health.has_reference:
            raise ConfigError(f"trainer.grpo.kl_coef: {self.config.grpo.kl_coef} > 0, but the training "
                              "service keeps no reference model; start it with the same recipe")

    def sequence_logprobs(self, data: TensorBatch) -> Tensor:
        """The service's logprobs of `data`'s rows (its trainer's micro-batches and ranks)."""
        lengths = data.attention_mask.sum(-1).tolist()
        rows = self.client.compute_logprobs([data.input_ids[i, :n].tolist() for i, n in enumerate(lengths)])
        out = torch.zeros(data.input_ids.shape, dtype=torch.float32)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
        return out

    def update(self, mini: TensorBatch) -> dict[str, float]:
        """One optimizer step on the service from `mini` (zero-advantage rows left out when they add 0)."""
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
        return metrics

    def prepare(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """The registry's advantages, plus `dropped_zero_adv`: the datums `update` will not send."""
        advantages, metrics = super().prepare(batch)
        dropped = int((advantages == 0).sum()) if self.drops_zero_advantage else 0
        self.dropped_zero_adv += dropped
        return advantages, {**metrics, "dropped_zero_adv": float(dropped)}

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

    def save_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """The trainer part of a run checkpoint: the service saves its model, optimizer, lr schedule
        and step in its own storage (`<service root>/checkpoints/run-global_step_N.pt`), and
        `folder/trainer.json` names it. Returns the step it holds."""
        name = f"run-global_step_{self.global_step}"
        saved = self.client.save_checkpoint(name)
        if saved.step != self.global_step:
            raise RuntimeError(
                f"the training service holds {saved.step} updates, this run {self.global_step}"
            )
        record = {"service_checkpoint": name, "path": saved.path, "step": saved.step,
                  "dropped_zero_adv": self.dropped_zero_adv, "service": self.client.base_url}
        with open(os.path.join(os.fspath(folder), SERVICE_RECORD), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        return self.global_step

    def load_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """Restore the service's checkpoint that `folder/trainer.json` names; returns its step."""
        file = os.path.join(os.fspath(folder), SERVICE_RECORD)
        if not os.path.exists(file):
            raise FileNotFoundError(
                f"{folder} has no {SERVICE_RECORD}: it was not written in mode=training-service"
            )
        with open(file, encoding="utf-8") as f:
            record = json.load(f)
        try:
            loaded = self.client.load_checkpoint(record["service_checkpoint"])
        except Exception as err:
            raise RuntimeError(
                f"{file}: the training service at {self.client.base_url} cannot load its checkpoint "
                f"{record['service_checkpoint']!r} ({record['path']}): {err}"
            ) from err
        self.global_step = loaded.step
        self.dropped_zero_adv = int(record.get("dropped_zero_adv", 0))
        return self.global_step

    def close(self) -> None:
        self.client.close()
