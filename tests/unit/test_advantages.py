"""group_advantages against hand-computed values, plus invariants checked on random groups."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer import GRPOTrainer, SFTTrainer
from nexrl_runtime.trainer.advantages import (
    ADVANTAGES,
    compute_advantages,
    group_advantages,
    register_advantage,
)
from nexrl_runtime.types import Batch, Trajectory

# Three groups, interleaved on purpose (a trainer must not assume contiguous groups):
#   a: rewards 1, 0     -> mean 0.5, centered +-0.5, unbiased std sqrt((0.25+0.25)/1) = sqrt(0.5)
#   b: rewards 2, 2, 2  -> identical: advantage exactly 0
#   c: rewards 0, 3, 6  -> mean 3, centered -3, 0, 3, unbiased std sqrt(18/2) = 3
REWARDS = [1.0, 2.0, 0.0, 0.0, 2.0, 3.0, 2.0, 6.0]
GROUPS = ["a", "b", "c", "a", "b", "c", "b", "c"]
CENTERED = [0.5, 0.0, -3.0, -0.5, 0.0, 0.0, 0.0, 3.0]


def _adv(scale: str, eps: float = 1e-6) -> list[float]:
    return group_advantages(torch.tensor(REWARDS), GROUPS, scale, eps=eps).tolist()  # type: ignore[arg-type]


def test_scale_none_is_reward_minus_group_mean() -> None:
    assert _adv("none") == pytest.approx(CENTERED, abs=1e-7)


def test_scale_group_divides_by_group_std() -> None:
    s = math.sqrt(0.5)
    expected = [0.5 / s, 0.0, -1.0, -0.5 / s, 0.0, 0.0, 0.0, 1.0]
    assert _adv("group", eps=0.0) == pytest.approx(expected, abs=1e-6)
    # eps sits in the denominator: c's +3 / (3 + 0.5) = 0.857142...
    assert _adv("group", eps=0.5)[7] == pytest.approx(3 / 3.5)


def test_scale_batch_divides_by_std_of_all_rewards() -> None:
    # All 8 rewards: sum 16, mean 2; squared deviations 1,0,4,4,0,1,0,16 = 26; unbiased var 26/7.
    s = math.sqrt(26 / 7)  # 1.92725
    expected = [0.5 / s, 0.0, -3 / s, -0.5 / s, 0.0, 0.0, 0.0, 3 / s]
    assert _adv("batch", eps=0.0) == pytest.approx(expected, abs=1e-6)


def test_identical_rewards_and_singletons_give_exact_zero() -> None:
    # 0.1 * 3 / 3 != 0.1 in floating point; the result must still be exactly 0, even with eps=0.
    for scale in ("group", "batch", "none"):
        adv = group_advantages(torch.tensor([0.1, 0.1, 0.1, 5.0]), [0, 0, 0, 1], scale, eps=0.0)  # type: ignore[arg-type]
        assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]
        assert not adv.isnan().any()


def test_tensor_group_ids_match_string_ids() -> None:
    ids = torch.tensor([7, 3, 9, 7, 3, 9, 3, 9])
    by_tensor = group_advantages(torch.tensor(REWARDS), ids, "group")
    assert by_tensor.tolist() == pytest.approx(_adv("group"))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one per reward"):
        group_advantages(torch.tensor([1.0, 2.0]), ["a"])
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.tensor([1.0]), ["a"], "std")  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(-10, 10, allow_nan=False, width=32)), min_size=1, max_size=12
    ),
    st.sampled_from(["group", "batch", "none"]),
)
def test_each_group_sums_to_zero_and_is_permutation_equivariant(
    items: list[tuple[int, float]], scale: str
) -> None:
    groups = [g for g, _ in items]
    rewards = torch.tensor([r for _, r in items], dtype=torch.float64)
    adv = group_advantages(rewards, groups, scale)  # type: ignore[arg-type]
    assert torch.isfinite(adv).all()
    for g in set(groups):
        members = [i for i, gi in enumerate(groups) if gi == g]
        assert abs(float(adv[members].sum())) < 1e-6 * max(1.0, float(adv.abs().max()))
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(len(items)))
    shuffled = group_advantages(rewards[perm], [groups[i] for i in perm.tolist()], scale)  # type: ignore[arg-type]
    assert torch.allclose(shuffled, adv[perm])


def test_the_registry_serves_builtins_and_a_recipes_own_estimator() -> None:
    trajs = [
        Trajectory([1, 2, 3], [0, 1, 1], [0.0] * 3, r, g, "t", 0, 1)
        for r, g in [(1.0, "a"), (0.0, "a"), (3.0, "b")]
    ]
    batch, cfg = Batch(trajs), TrainerConfig()
    adv, metrics = compute_advantages("grpo", batch, cfg)
    assert adv.tolist() == pytest.approx([0.7071, -0.7071, 0.0], abs=1e-4) and metrics["reward_max"] == 3
    assert compute_advantages("none", batch, cfg)[0].tolist() == [0.0, 0.0, 0.0]
    assert GRPOTrainer.advantage == "grpo" and SFTTrainer.advantage == "none"

    @register_advantage("test-centered")
    def centered(batch: Batch, config: TrainerConfig) -> tuple[torch.Tensor, dict[str, float]]:
        rewards = torch.tensor(batch.rewards)
        return rewards - rewards.mean(), {"centered": 1.0}

    try:
        assert compute_advantages("test-centered", batch, cfg)[0].tolist() == pytest.approx(
            [-1 / 3, -4 / 3, 5 / 3]
        )
        with pytest.raises(ValueError, match="already registered"):
            register_advantage("test-centered")(GRPOTrainer.prepare)
        with pytest.raises(KeyError, match="no advantage estimator 'nope'"):
            compute_advantages("nope", batch, cfg)
    finally:
        del ADVANTAGES["test-centered"]
