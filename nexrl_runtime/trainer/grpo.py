"""GRPO: PPO-clip on group-relative advantages, with an optional KL to a frozen reference and an
entropy bonus."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer.base import LossNorm, Trainer
from nexrl_runtime.trainer.collate import TensorBatch
from nexrl_runtime.trainer.losses import (
    aggregate_loss,
    entropy_from_logits,
    kl_penalty,
    ppo_clip_loss,
    token_logprobs,
)


class GRPOTrainer(Trainer):
    """Loss = agg(PPO-clip) + kl_coef * agg(KL to reference) - entropy_coef * agg(entropy).

    Advantages are the registry's "grpo" estimator (trainer/advantages.py). Old logprobs are the
    sampling logprobs carried by each trajectory (or, with `trainer.recompute_old_logprobs`, the
    trainer's own before the update), so on-policy data has ratio 1 on the first update. With
    kl_coef > 0 the reference is a frozen copy of the model as passed in, i.e. the initial weights.
    """

    advantage = "grpo"

    def __init__(self, model: torch.nn.Module, config: TrainerConfig, pad_token_id: int) -> None:
        super().__init__(model, config, pad_token_id)
        self.ref_model: torch.nn.Module | None = None
        if config.grpo.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
            for p in self.ref_model.parameters():
                p.grad = None

    def compute_loss(self, micro: TensorBatch, norm: LossNorm) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config.grpo
        mask = micro.loss_mask
        # Metrics are token means over the mini-batch whatever loss_agg is: comparable across runs.
        token_share = mask.sum() / max(norm.num_tokens, 1)

        def agg(x: Tensor) -> Tensor:
            return aggregate_loss(x, mask, cfg.loss_agg, num_tokens=norm.num_tokens, num_seqs=norm.num_seqs)

        def token_mean_share(x: Tensor) -> Tensor:
            return aggregate_loss(x.detach(), mask, "token-mean", num_tokens=norm.num_tokens)

        logits = self.forward_logits(micro)
        logp = token_logprobs(logits, micro.input_ids)
        pg, clip_frac = ppo_clip_loss(
            logp, micro.old_logprobs, micro.advantages, mask, cfg.clip_low, cfg.clip_high
        )
        loss = agg(pg)
        metrics = {
            "pg_loss": loss.detach(),
            "clip_frac": clip_frac * token_share,
            "ppo_kl": token_mean_share(micro.old_logprobs - logp),
        }

        with torch.set_grad_enabled(cfg.entropy_coef > 0 and torch.is_grad_enabled()):
            entropy = torch.nn.functional.pad(entropy_from_logits(logits[:, :-1]), (1, 0))
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * agg(entropy)
        metrics["entropy"] = token_mean_share(entropy)

        if self.ref_model is not None:
            with torch.no_grad():
                ref_logits = self.ref_model(input_ids=micro.input_ids, attention_mask=micro.attention_mask)
                ref_logp = token_logprobs(ref_logits.logits, micro.input_ids)
            kl = kl_penalty(logp, ref_logp, cfg.kl_estimator)
            loss = loss + cfg.kl_coef * agg(kl)
            metrics["kl"] = token_mean_share(kl)
        return loss, metrics
