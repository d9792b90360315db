"""Trainer base: optimizer, mini/micro-batching, grad clipping, checkpoints; subclasses give the loss."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer.collate import TensorBatch, collate
from nexrl_runtime.types import Batch


@dataclass(frozen=True)
class LossNorm:
    """Denominators of the mini-batch a micro-batch belongs to, so micro losses sum to its loss."""

    num_tokens: int
    num_seqs: int


class Trainer(ABC):
    """Owns the policy's optimizer; one `train_step` = `ppo_epochs` passes of optimizer steps over a Batch.

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
        self.optimizer = self.build_optimizer(self.params)
        self.global_step = 0  # completed train_step calls

    def build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """AdamW from `trainer.optim` over `params` (a sharded trainer rebuilds it over its shards)."""
        optim = self.config.optim
        return torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def prepare(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Per-trajectory advantages [N] and batch-level metrics; default zeros and none (SFT)."""
        return torch.zeros(len(batch)), {}

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

    def _clip_and_step(self) -> float:
        """Clip (if optim.grad_clip) and step; a non-finite grad norm skips the update. Returns the norm."""
        max_norm = self.config.optim.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if math.isfinite(grad_norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def train_step(self, batch: Batch) -> dict[str, float]:
        """Train on `batch` in mini-batches of `mini_batch_size` trajectories (one optimizer step
        each, in order), repeated `ppo_epochs` times. Metrics are averaged over optimizer steps."""
        if not len(batch):
            raise ValueError("train_step got an empty batch")
        self.model.train()
        advantages, metrics = self.prepare(batch)
        data = collate(batch.trajectories, self.pad_token_id, advantages)
        mini_size = self.config.mini_batch_size or len(data)
        sums: dict[str, float] = {}
        updates = skipped = 0
        for _ in range(self.config.ppo_epochs):
            for start in range(0, len(data), mini_size):
                step_metrics = self.backward(data.slice(start, start + mini_size))
                step_metrics["grad_norm"] = self._clip_and_step()
                skipped += not math.isfinite(step_metrics["grad_norm"])
                updates += 1
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        metrics.update({key: value / updates for key, value in sums.items()})
        metrics.update(
            lr=float(self.optimizer.param_groups[0]["lr"]),
            num_tokens=float(data.num_tokens),
            num_seqs=float(len(data)),
            optimizer_steps=float(updates),
            skipped_steps=float(skipped),
        )
        self.global_step += 1
        return metrics

    def state_dict(self) -> dict[str, Tensor]:
        """The policy's weights for weight sync: live tensors (detached, not copied)."""
        return self.model.state_dict()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write model + optimizer state atomically: a temp file in the same folder, then os.replace."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "global_step": self.global_step,
        }
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

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
        extra = {"global_step": self.global_step}
        torch.save({"optimizer": self.optimizer.state_dict(), **extra}, os.path.join(folder, "optimizer.pt"))
        return self.global_step

    def load_checkpoint(self, folder: str | os.PathLike[str]) -> int:
        """Restore what `save_checkpoint` wrote; returns the step it holds."""
        from safetensors.torch import load_model

        folder = os.fspath(folder)
        load_model(self.model, os.path.join(folder, "model.safetensors"), device=str(self.device))
        ref = getattr(self, "ref_model", None)
        ref_file = os.path.join(folder, "ref_model.safetensors")
        if ref is not None:
            if not os.path.exists(ref_file):
                raise FileNotFoundError(f"{folder} has no ref_model.safetensors for the KL reference")
            load_model(ref, ref_file, device=str(self.device))
        state = torch.load(os.path.join(folder, "optimizer.pt"), map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["global_step"])
        return self.global_step

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore what `save` wrote (a GRPO reference model is not saved: it is the initial weights)."""
        state = torch.load(os.fspath(path), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["global_step"])
