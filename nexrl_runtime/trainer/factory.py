"""build_trainer: the in-process Trainer (self-hosted) or a TrainingServiceTrainer on the training service
named by `cluster.trainer.base_url` (training-service)."""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from nexrl_runtime.config.loader import ConfigError
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.registry import resolve_class
from nexrl_runtime.trainer import TRAINERS, Trainer
from nexrl_runtime.types import Batch

SERVICE_READY_TIMEOUT_S = 300.0  # a trainer pod may still be loading its model when the head starts


class TrainerLike(Protocol):
    """What the controller uses of a trainer."""

    def train_step(self, batch: Batch) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...


def service_url(config: NexRLConfig) -> str:
    """The training service's URL; a ConfigError (before any work) if training-service mode lacks it."""
    url = config.cluster.trainer.base_url
    if not url:
        raise ConfigError(
            "mode=training-service needs cluster.trainer.base_url (the operator writes it; locally start "
            "`nexrl serve-trainer -c RECIPE --port 8000` and pass cluster.trainer.base_url=http://127.0.0.1:8000)"
        )
    return url


def build_trainer(
    config: NexRLConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase
) -> TrainerLike:
    """Self-hosted: `trainer.type` on `model`. Training-service: a TrainingServiceTrainer whose service
    first takes `model`'s weights, so it trains from exactly what the inference engine serves."""
    if config.mode == "self-hosted":
        cls = resolve_class(config.trainer.type, TRAINERS, Trainer, config.recipe_dir)
        return cls(model, config.trainer, tokenizer.pad_token_id)
    from nexrl_runtime.trainer_service.client import TrainerClient
    from nexrl_runtime.trainer_service.service_trainer import TrainingServiceTrainer

    client = TrainerClient(service_url(config))
    trainer = TrainingServiceTrainer(client, config.trainer, tokenizer.pad_token_id, config.recipe_dir)
    trainer.check_service(client.wait_ready(SERVICE_READY_TIMEOUT_S))
    trainer.load_state_dict(model.state_dict())
    return trainer
