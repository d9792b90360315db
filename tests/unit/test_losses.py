"""Loss math against values worked out by hand (see the comments next to each number)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from nexrl_runtime.trainer.losses import (
    aggregate_loss,
    entropy_from_logits,
    kl_penalty,
    ppo_clip_loss,
    token_logprobs,
)

LN2, LN3 = math.log(2), math.log(3)


def _logits() -> torch.Tensor:
    # [1, 3, V=3]: position 0 is uniform; position 1 has softmax [1/6, 2/6, 3/6]; position 2 predicts
    # past the end and must not be used.
    return torch.tensor([[[0.0, 0.0, 0.0], [0.0, LN2, LN3], [50.0, -50.0, 9.0]]])


def test_token_logprobs_uses_previous_position_and_zeroes_first() -> None:
    tokens = torch.tensor([[2, 0, 2]])
    # t=0: nothing predicts it -> 0; t=1: token 0 under uniform -> log(1/3); t=2: token 2 under
    # [1/6, 2/6, 3/6] -> log(1/2).
    expected = [[0.0, -LN3, -LN2]]
    assert token_logprobs(_logits(), tokens).tolist() == [pytest.approx(expected[0], abs=1e-6)]


def test_token_logprobs_upcasts_half_precision() -> None:
    out = token_logprobs(_logits().bfloat16(), torch.tensor([[2, 0, 2]]))
    assert out.dtype == torch.float32
    assert out[0, 1].item() == pytest.approx(-LN3, abs=1e-2)


def test_entropy_from_logits() -> None:
    # uniform over 3 -> ln 3; [1/6, 2/6, 3/6] -> 1/6 ln 6 + 1/3 ln 3 + 1/2 ln 2 = 1.011404;
    # [50, -50, 9] is one-hot in float32 -> 0.
    h = entropy_from_logits(_logits())[0].tolist()
    assert h == pytest.approx([LN3, math.log(6) / 6 + LN3 / 3 + LN2 / 2, 0.0], abs=1e-6)


def _ppo_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # clip range [0.8, 1.28]. Per token: ratio, advantage -> loss (clipped?)
    #   1.5, +1 -> -min(1.5, 1.28)        = -1.28 (clipped)
    #   0.5, +1 -> -min(0.5, 0.8)         = -0.5
    #   0.5, -1 -> -min(-0.5, -0.8)       = +0.8  (clipped)
    #   1.5, -1 -> -min(-1.5, -1.28)      = +1.5
    #   1.0, +2 -> -2
    #   3.0, +1 -> masked out: loss 0, not counted in clip_frac
    ratios = torch.tensor([[1.5, 0.5, 0.5], [1.5, 1.0, 3.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 2.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    old = torch.full((2, 3), -2.0)
    return old + ratios.log(), old, adv, mask


def test_ppo_clip_loss_asymmetric_clip() -> None:
    logp, old, adv, mask = _ppo_case()
    loss, clip_frac = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.tolist()[0] == pytest.approx([-1.28, -0.5, 0.8], abs=1e-5)
    assert loss.tolist()[1] == pytest.approx([1.5, -2.0, 0.0], abs=1e-5)
    assert clip_frac.item() == pytest.approx(2 / 5)  # 2 clipped of 5 masked tokens


def test_ppo_clip_loss_gradient_is_zero_where_clipped() -> None:
    logp, old, adv, mask = _ppo_case()
    logp.requires_grad_(True)
    loss, _ = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    loss.sum().backward()
    # d(-ratio * A)/dlogp = -ratio * A where unclipped: -0.5*1, -1.5*-1, -1*2; clipped/masked: 0.
    assert logp.grad is not None
    assert logp.grad.tolist()[0] == pytest.approx([0.0, -0.5, 0.0], abs=1e-5)
    assert logp.grad.tolist()[1] == pytest.approx([1.5, -2.0, 0.0], abs=1e-5)


def test_ppo_clip_loss_broadcasts_sequence_advantages_and_survives_huge_ratios() -> None:
    logp = torch.tensor([[0.0, -1.0], [0.0, 500.0]])  # row 1, token 1: log ratio 500 at a padded spot
    old = torch.tensor([[0.0, -1.0], [0.0, 0.0]])
    loss, clip_frac = ppo_clip_loss(
        logp, old, torch.tensor([2.0, -3.0]), torch.tensor([[0, 1], [0, 0]]), 0.2, 0.2
    )
    # ratio 1 at the one masked-in token: loss -A = -2, nothing clipped; no inf/nan from the pad.
    assert loss.tolist() == [[0.0, -2.0], [0.0, 0.0]]
    assert clip_frac.item() == 0.0


# Per-token losses of two sequences of unequal length (4 and 2 tokens); the masked 1e6 must not leak.
AGG_LOSS = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 1e6, 1e6]])
AGG_MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


def test_aggregation_modes_differ_on_unequal_lengths() -> None:
    # token-mean: (1+2+3+4+10+20) / 6 = 40/6; seq-mean-token-mean: (10/4 + 30/2) / 2 = 8.75;
    # seq-mean-token-sum: (10 + 30) / 2 = 20, and / 4 with token_sum_norm=4.
    assert aggregate_loss(AGG_LOSS, AGG_MASK, "token-mean").item() == pytest.approx(40 / 6)
    assert aggregate_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-mean").item() == pytest.approx(8.75)
    assert aggregate_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum").item() == pytest.approx(20.0)
    assert aggregate_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum", token_sum_norm=4).item() == pytest.approx(
        5.0
    )


@pytest.mark.parametrize(
    ("mode", "whole"), [("token-mean", 40 / 6), ("seq-mean-token-mean", 8.75), ("seq-mean-token-sum", 20.0)]
)
def test_micro_batch_shares_sum_to_the_whole(mode: str, whole: float) -> None:
    # One row per micro-batch, normalised by the whole batch's counts (6 tokens, 2 sequences):
    # token-mean 10/6 + 30/6; seq-mean-token-mean 2.5/2 + 15/2; seq-mean-token-sum 10/2 + 30/2.
    parts = [
        aggregate_loss(AGG_LOSS[i : i + 1], AGG_MASK[i : i + 1], mode, num_tokens=6, num_seqs=2)  # type: ignore[arg-type]
        for i in range(2)
    ]
    assert sum(p.item() for p in parts) == pytest.approx(whole)


def test_per_micro_batch_token_mean_would_be_wrong() -> None:
    # The trap the normalisers avoid: averaging each micro-batch's own token mean gives
    # (10/4 + 30/2) / 2 = 8.75, not the token mean 40/6.
    naive = (
        sum(aggregate_loss(AGG_LOSS[i : i + 1], AGG_MASK[i : i + 1], "token-mean").item() for i in range(2))
        / 2
    )
    assert naive == pytest.approx(8.75)
    assert naive != pytest.approx(40 / 6)


def test_aggregate_rejects_unknown_mode_and_handles_empty_mask() -> None:
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_loss(AGG_LOSS, AGG_MASK, "mean")  # type: ignore[arg-type]
    empty = torch.zeros_like(AGG_MASK)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        assert aggregate_loss(AGG_LOSS, empty, mode).item() == 0.0  # type: ignore[arg-type]


def test_kl_estimators_by_hand() -> None:
    # logp - logp_ref = [ln 2, -ln 2, 0].
    logp = torch.tensor([[math.log(0.5), math.log(0.25), -1.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5), -1.0]])
    assert kl_penalty(logp, ref, "k1")[0].tolist() == pytest.approx([LN2, -LN2, 0.0], abs=1e-6)
    # 0.5 * ln2^2 = 0.240227
    assert kl_penalty(logp, ref, "k2")[0].tolist() == pytest.approx(
        [0.5 * LN2**2, 0.5 * LN2**2, 0.0], abs=1e-6
    )
    # x = ref - logp = [-ln 2, ln 2, 0]; e^x - x - 1 = [0.5 + ln2 - 1, 2 - ln2 - 1, 0]
    #                                             = [0.193147, 0.306853, 0]
    assert kl_penalty(logp, ref, "k3")[0].tolist() == pytest.approx([LN2 - 0.5, 1 - LN2, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logp, ref, "k4")  # type: ignore[arg-type]


@given(st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=16))
@example([0.0, 3.629e-14])  # e^x - x - 1 rounded to -1.1e-16 before k3 was clamped at 0
def test_k2_k3_are_nonnegative_and_zero_only_on_policy(values: list[float]) -> None:
    half = len(values) // 2
    logp = torch.tensor(values[:half], dtype=torch.float64)
    ref = torch.tensor(values[half : 2 * half], dtype=torch.float64)
    for est in ("k2", "k3"):
        assert (kl_penalty(logp, ref, est) >= 0).all()  # type: ignore[arg-type]
        assert (kl_penalty(logp, logp, est) == 0).all()  # type: ignore[arg-type]
