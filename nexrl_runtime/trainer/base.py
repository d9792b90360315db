"""Trainer base: optimizer and lr schedule, mini/micro-batching, grad clipping, checkpoints;
subclasses give the loss. The train_step loop itself is trainer/loop.py's."""

from __future__ import annotations

import math
import os
import warnings
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from nexrl_runtime.checkpoint import atomic_torch_save
from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer.collate import TensorBatch
from nexrl_runtime.trainer.loop import TrainLoop
from nexrl_runtime.trainer.losses import token_logprobs
from nexrl_runtime.trainer.schedule import build_scheduler


@dataclass(frozen=True)
class LossNorm:
    """Denominators of the mini-batch a micro-batch belongs to, so micro losses sum to its loss."""

    num_tokens: int
    num_seqs: int


class StepResult(NamedTuple):
    grad_norm: float
    lr: float  # the lr the step was taken with (the schedule has moved on to the next one)


class Trainer(TrainLoop):
    """Owns the policy's optimizer and lr scheduler; one `train_step` = `ppo_epochs` passes of
    optimizer steps over a Batch. The scheduler steps once per optimizer step (a skipped,
    non-finite one too, so the lr sequence follows `optimizer_steps`).

    The model is an HF-style causal LM (`model(input_ids=, attention_mask=).logits`). `train_step`
    puts it in train mode, so RL models should be built with dropout 0 (else ratio != 1 on-policy).
    """

    def __init__(self, model: torch.nn.Module, config: TrainerConfig, pad_token_id: int) -> None:
        self.model = model
        self.config = config
        self.pad_token_id = pad_token_id
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
        self.init_optimizer()
        self.global_step = 0  # completed train_step calls

    def init_optimizer(self) -> None:
        """(Re)build the optimizer over `self.params` and the lr scheduler over it."""
        self.optimizer = self.build_optimizer(self.params)
        self.scheduler = build_scheduler(self.optimizer, self.config.lr_schedule)

    def build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """AdamW from `trainer.optim` over `params` (a sharded trainer rebuilds it over its shards)."""
        optim = self.config.optim
        return torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @abstractmethod
    def compute_loss(self, micro: TensorBatch, norm: LossNorm) -> tuple[Tensor, dict[str, Tensor]]:
        """This micro-batch's share of the mini-batch loss, normalised by `norm`, plus metrics scaled
        the same way: summed over a mini-batch's micro-batches, both give mini-batch values."""

    def forward_logits(self, micro: TensorBatch) -> Tensor:
        """[B, T, V] policy logits; override for models that are not HF-style causal LMs."""
        return self.model(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits

    def backward(self, mini: TensorBatch, norm: LossNorm | None = None) -> dict[str, float]:
        """Zero grads, then forward+backward each micro-batch: leaves the mini-batch gradient in .grad
        (equal to one pass over the whole mini-batch) and returns its summed metrics. `norm` defaults
        to `mini`'s counts; the training service passes the whole mini-batch's when `mini` is part of it."""
        self.optimizer.zero_grad(set_to_none=True)
        norm = norm or LossNorm(num_tokens=mini.num_tokens, num_seqs=len(mini))
        micro_size = self.config.micro_batch_size or len(mini)
        totals: dict[str, Tensor] = {}
        for start in range(0, len(mini), micro_size):
            loss, metrics = self.compute_loss(mini.slice(start, start + micro_size).to(self.device), norm)
            loss.backward()
            for key, value in {"loss": loss, **metrics}.items():
                totals[key] = totals.get(key, 0) + value.detach()
        # One device sync per mini-batch, not one per metric per micro-batch.
        return dict(zip(totals, torch.stack([v.float() for v in totals.values()]).tolist(), strict=True))

    def grad_norm(self, max_norm: float) -> float:
        """Clip the gradient to `max_norm` (inf: no clipping) and return its total norm."""
        return float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))

    def _clip_and_step(self) -> StepResult:
        """Clip (if optim.grad_clip) and step; a non-finite grad norm skips the update. The lr
        scheduler steps either way."""
        grad_norm = self.grad_norm(self.config.optim.grad_clip or math.inf)
        lr = float(self.optimizer.param_groups[0]["lr"])
        with warnings.catch_warnings():
            # a first update skipped for a non-finite norm makes torch warn about the order
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            if math.isfinite(grad_norm):
                self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(grad_norm, lr)

    def begin_step(self) -> None:
        self.model.train()

    def update(self, mini: TensorBatch) -> dict[str, float]:
        metrics = self.backward(mini)
        step = self._clip_and_step()
        metrics.update(grad_norm=step.grad_norm, lr=step.lr)
        return metrics

    def micro_logprobs(self, micro: TensorBatch) -> Tensor:
        """[b, t] logprobs of one micro-batch's tokens, no grad, in eval mode (no dropout)."""
        was_training = self.model.training
        self.model.eval()
        micro = micro.to(self.device)
        try:
            with torch.no_grad():
                return token_logprobs(self.forward_logits(micro), micro.input_ids)
        finally:
            self.model.train(was_training)

    def sequence_logprobs(self, data: TensorBatch) -> Tensor:
        out = torch.zeros(data.input_ids.shape, dtype=torch.float32)
        micro_size = self.config.micro_batch_size or len(data)
        for start in range(0, len(data), micro_size):
            logp = self.micro_logprobs(data.slice(start, start + micro_size)).float().cpu()
            out[start : start + logp.shape[0], : logp.shape[1]] = logp
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The policy's weights for weight sync: live tensors (detached, not copied)."""
        return self.model.state_dict()

    def training_state(self) -> dict[str, Any]:
        """What a checkpoint holds beside the weights: optimizer, lr scheduler, step."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "global_step": self.global_step,
        }

    def load_scheduler(self, state: Mapping[str, Any], where: str) -> None:
        """Restore the lr scheduler from a checkpoint's `state`. One written before schedules
        existed has none: fine for a constant lr, an error naming the file otherwise."""
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
            return
        sched = self.config.lr_schedule
        if sched.kind != "constant" or sched.warmup_steps:
            raise ValueError(
                f"{where} has no lr-scheduler state (written before trainer.lr_schedule existed), so "
                f"trainer.lr_schedule={sched.model_dump()} cannot resume from it; resume it with the "
                "default constant schedule"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write model + optimizer + scheduler state atomically (checkpoint.atomic_torch_save)."""
        atomic_torch_save({"model": self.model.state_dict(), **self.training_state()}, path)

    def save_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """Write the trainer's part of a run checkpoint into `folder` (nexrl_runtime/checkpoint.py
        makes it atomic): `model.safetensors`, `optimizer.pt`, and `ref_model.safetensors` when
        there is a frozen reference model. Returns the step it holds."""
        from safetensors.torch import save_model

        folder = os.fspath(folder)
        save_model(self.model, os.path.join(folder, "model.safetensors"))
        ref = getattr(self, "ref_model", None)
        if ref is not None:
            save_model(ref, os.path.join(folder, "ref_model.safetensors"))
        torch.save(self.training_state(), os.path.join(folder, "optimizer.pt"))
        return self.global_step

    def load_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """Restore what `save_checkpoint` wrote, or a sharded trainer's `dcp/` folder of any rank
        count (trainer/dcp_checkpoint.py); returns the step it holds."""
        from safetensors.torch import load_model

        from nexrl_runtime.trainer.dcp_checkpoint import is_sharded_checkpoint, load_sharded

        if is_sharded_checkpoint(folder):
            return load_sharded(self, folder)
        folder = os.fspath(folder)
        load_model(self.model, os.path.join(folder, "model.safetensors"), device=str(self.device))
        ref = getattr(self, "ref_model", None)
        ref_file = os.path.join(folder, "ref_model.safetensors")
        if ref is not None:
            if not os.path.exists(ref_file):
                raise FileNotFoundError(f"{folder} has no ref_model.safetensors for the KL reference")
            load_model(ref, ref_file, device=str(self.device))
        file = os.path.join(folder, "optimizer.pt")
        state = torch.load(file, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_scheduler(state, file)
        self.global_step = int(state["global_step"])
        return self.global_step

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore what `save` wrote (a GRPO reference model is not saved: it is the initial weights)."""
        state = torch.load(os.fspath(path), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_scheduler(state, os.fspath(path))
        self.global_step = int(state["global_step"])
