"""Per-token RL/SFT loss math: stateless functions of tensors, shared by every trainer.

Conventions: per-token tensors are [B, T] and aligned to `tokens`, so position t holds the quantity
for token t, predicted from logits at t-1; position 0 has no prediction and must be masked out.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
KLEstimator = Literal["k1", "k2", "k3"]

# Bound on |log ratio| before exp(): exp(20) ~ 5e8 is already a fully clipped ratio, and keeping it
# finite stops inf * 0 = nan at padded or far-off-policy tokens (verl uses the same bound).
_MAX_LOG_RATIO = 20.0


def _upcast(x: Tensor) -> Tensor:
    """Half-precision logits to float32 for softmax math; float32/float64 are kept as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(tokens[:, t] | tokens[:, :t]) from `logits` [B, T, V], as [B, T] with 0 at t=0."""
    logits = _upcast(logits[:, :-1])
    picked = logits.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    # gather - logsumexp never materialises the [B, T, V] log_softmax alongside the logits.
    return torch.nn.functional.pad(picked - logits.logsumexp(-1), (1, 0))


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim: [..., V] -> [...], no shift applied."""
    logits = _upcast(logits)
    probs = logits.softmax(-1)
    return logits.logsumexp(-1) - (probs * logits).sum(-1)


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[Tensor, Tensor]:
    """PPO-clip per-token loss -min(r*A, clip(r, 1-clip_low, 1+clip_high)*A), r = exp(logp - old).

    `advantages` is [B] (one per sequence, broadcast over tokens) or [B, T]. Returns the [B, T]
    losses (zero where mask is 0) and the fraction of masked tokens where the clipped term won,
    i.e. where the token gives no gradient.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    log_ratio = (logprobs - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    unclipped = -ratio * advantages
    clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    keep = mask.bool()
    loss = torch.where(keep, torch.maximum(unclipped, clipped), 0.0)
    was_clipped = (clipped > unclipped) & keep
    clip_frac = was_clipped.sum() / keep.sum().clamp(min=1)
    return loss, clip_frac.detach().to(loss.dtype)


def aggregate_loss(
    loss: Tensor,
    mask: Tensor,
    mode: LossAgg,
    *,
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    token_sum_norm: float | None = None,
) -> Tensor:
    """Reduce a [B, T] per-token loss over the tokens where `mask` is 1.

    token-mean:          sum of all masked losses / num masked tokens (long answers weigh more);
    seq-mean-token-mean: mean over sequences of each sequence's token mean (every answer weighs the same);
    seq-mean-token-sum:  mean over sequences of each sequence's token sum, divided by the constant
                         `token_sum_norm` if given (Dr.GRPO: the max generation length), so there is
                         no length-dependent normaliser at all.
    `num_tokens` / `num_seqs` override the denominators (default: this batch's). Gradient
    accumulation passes the whole mini-batch's counts so the micro-batch losses sum to its loss.
    """
    m = mask.to(loss.dtype)
    masked = torch.where(mask.bool(), loss, 0.0)
    if mode == "token-mean":
        denom = m.sum() if num_tokens is None else num_tokens
        return masked.sum() / torch.as_tensor(denom, dtype=loss.dtype).clamp(min=1)
    seqs = torch.as_tensor(loss.shape[0] if num_seqs is None else num_seqs, dtype=loss.dtype).clamp(min=1)
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / m.sum(-1).clamp(min=1)).sum() / seqs
    if mode == "seq-mean-token-sum":
        out = masked.sum() / seqs
        return out / token_sum_norm if token_sum_norm is not None else out
    raise ValueError(f"unknown loss aggregation {mode!r}")


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' logprobs.

    k1 = logp - logp_ref (unbiased, can be negative); k2 = (logp - logp_ref)^2 / 2;
    k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1 (Schulman: unbiased and always >= 0).
    """
    diff = logprobs - ref_logprobs
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff**2
    if estimator == "k3":
        neg = (-diff).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        # e^x - x - 1 >= 0 exactly; near x = 0 rounding can give -1e-16, so the clamp states the bound.
        return (neg.exp() - neg - 1.0).clamp(min=0.0)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")
