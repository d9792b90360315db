"""Supervised fine-tuning: cross-entropy on the loss_mask tokens (warm start, distillation)."""

from __future__ import annotations

from torch import Tensor

from nexrl_runtime.trainer.base import LossNorm, Trainer
from nexrl_runtime.trainer.collate import TensorBatch
from nexrl_runtime.trainer.losses import aggregate_loss, token_logprobs


class SFTTrainer(Trainer):
    """Token-mean negative log-likelihood of the masked tokens, normalised over the mini-batch."""

    def compute_loss(self, micro: TensorBatch, norm: LossNorm) -> tuple[Tensor, dict[str, Tensor]]:
        logp = token_logprobs(self.forward_logits(micro), micro.input_ids)
        loss = aggregate_loss(-logp, micro.loss_mask, "token-mean", num_tokens=norm.num_tokens)
        return loss, {}
