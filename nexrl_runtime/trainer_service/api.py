"""Wire format of the training service: pydantic request/response models and the datum conversions
both sides use (TensorBatch rows -> datums on the client, datums -> Trajectories on the server)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nexrl_runtime.config.schema import GRPOConfig, LRScheduleConfig, OptimConfig
from nexrl_runtime.trainer.collate import TensorBatch
from nexrl_runtime.types import Trajectory

# One path segment: no '/', no leading '.', so a name can never leave the service's folders.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
TokenId = Annotated[int, Field(ge=0)]


class Message(BaseModel):
    """Base: unknown keys and non-finite floats are 422s, not silently accepted."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Datum(Message):
    """One sequence to train on: prompt + response tokens, which tokens are trained on (1), their
    sampling logprobs (0 where not trained) and the sequence's advantage (0 for SFT)."""

    tokens: list[TokenId] = Field(min_length=1)
    loss_mask: list[Literal[0, 1]]
    logprobs: list[float]
    advantage: float = 0.0

    @model_validator(mode="after")
    def _same_length(self) -> Datum:
        n = len(self.tokens)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"tokens ({n}), loss_mask ({len(self.loss_mask)}) and logprobs ({len(self.logprobs)}) "
                "must have the same length"
            )
        return self


class Norm(Message):
    """Denominators of the whole mini-batch the datums belong to (see trainer.base.LossNorm)."""

    num_tokens: int = Field(ge=0)
    num_seqs: int = Field(ge=0)


class ForwardBackwardRequest(Message):
    """Compute the gradient of `loss` on `datums`, replacing any pending one (so a retry is harmless).

    `loss` is a trainer registry name ('grpo', 'sft' = cross-entropy); `loss_config` replaces the
    service's GRPO section for this call. `norm` defaults to the datums' own counts; a client that
    dropped datums passes the full mini-batch's, and with no datums at all the gradient is zero.
    """

    loss: str = "grpo"
    loss_config: GRPOConfig | None = None
    datums: list[Datum]
    norm: Norm | None = None


class ForwardBackwardResponse(Message):
    """Metrics summed over the micro-batches (mini-batch values); None stands for a non-finite value."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)

    metrics: dict[str, float | None]
    num_datums: int
    num_tokens: int


class OptimStepResponse(Message):
    """The optimizer step just taken: `step` counts steps so far; `skipped` when the norm was not finite."""

    step: int
    grad_norm: float | None
    skipped: bool
    lr: float


class LogprobsRequest(Message):
    sequences: list[Annotated[list[TokenId], Field(min_length=1)]] = Field(min_length=1)


class LogprobsResponse(Message):
    """Per-token logprobs aligned to each sequence (0.0 at position 0, which nothing predicts)."""

    logprobs: list[list[float]]


class NameRequest(Message):
    name: Name


class SavedResponse(Message):
    path: str
    bytes: int
    seconds: float
    step: int


class LoadedResponse(Message):
    path: str
    step: int


class Health(Message):
    """What the service holds: enough for a client to check it drives the trainer it expects."""

    status: Literal["ok"] = "ok"
    step: int
    pending_gradient: bool
    losses: list[str]
    has_reference: bool
    optim: OptimConfig
    lr_schedule: LRScheduleConfig = LRScheduleConfig()
    grpo: GRPOConfig
    vocab_size: int
    max_length: int | None
    device: str


def finite_or_none(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """JSON has no inf/nan: send None instead."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def none_to_nan(metrics: Mapping[str, float | None]) -> dict[str, float]:
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}


def datums_from_rows(data: TensorBatch, rows: Sequence[int]) -> list[Datum]:
    """Rows of a collated batch back to unpadded datums (collate of these gives the same rows)."""
    lengths = data.attention_mask.sum(-1).tolist()
    return [
        Datum.model_construct(
            tokens=data.input_ids[i, : lengths[i]].tolist(),
            loss_mask=data.loss_mask[i, : lengths[i]].to(torch.long).tolist(),
            logprobs=data.old_logprobs[i, : lengths[i]].tolist(),
            advantage=float(data.advantages[i]),
        )
        for i in rows
    ]


def datums_to_trajectories(datums: Sequence[Datum]) -> list[Trajectory]:
    """Datums as Trajectories, so the service collates exactly as the in-process trainer does."""
    return [
        Trajectory(
            tokens=list(d.tokens),
            loss_mask=list(d.loss_mask),
            logprobs=list(d.logprobs),
            reward=0.0,
            group_id="",
            run_id="service",
            policy_version=0,
        )
        for d in datums
    ]
