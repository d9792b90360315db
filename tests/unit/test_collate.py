"""collate(): trajectories to right-padded tensors, and TensorBatch slicing for micro-batches."""

from __future__ import annotations

import pytest
import torch

from nexrl_runtime.trainer.collate import collate
from nexrl_runtime.types import Trajectory

PAD = 0


def _traj(tokens: list[int], mask: list[int], logprobs: list[float]) -> Trajectory:
    return Trajectory(tokens, mask, logprobs, reward=0.0, group_id="g", run_id="r", policy_version=0)


def _three() -> list[Trajectory]:
    return [
        _traj([5, 6, 7], [0, 1, 1], [0.0, -0.5, -0.25]),
        _traj([8, 9], [0, 1], [0.0, -1.0]),
        _traj([3, 4, 4, 4], [0, 0, 1, 1], [0.0, 0.0, -2.0, -3.0]),
    ]


def test_right_pads_to_longest_and_aligns_masks() -> None:
    b = collate(_three(), PAD, advantages=[1.0, -1.0, 0.5])
    assert b.input_ids.tolist() == [[5, 6, 7, 0], [8, 9, 0, 0], [3, 4, 4, 4]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert b.loss_mask.tolist() == [[0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]]
    assert b.old_logprobs.tolist() == [[0, -0.5, -0.25, 0], [0, -1.0, 0, 0], [0, 0, -2.0, -3.0]]
    assert b.advantages.tolist() == [1.0, -1.0, 0.5]
    assert b.input_ids.dtype == torch.long and b.loss_mask.dtype == torch.float32
    assert len(b) == 3 and b.num_tokens == 5


def test_uses_the_given_pad_id_and_defaults_advantages_to_zero() -> None:
    b = collate(_three()[:2], pad_token_id=19)
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 9, 19]]
    assert b.advantages.tolist() == [0.0, 0.0]


def test_first_token_is_never_trained_on() -> None:
    # Nothing predicts token 0, so a loss_mask of 1 there (and its logprob) is dropped.
    b = collate([_traj([1, 2], [1, 1], [-0.7, -0.3])], PAD)
    assert b.loss_mask.tolist() == [[0, 1]]
    assert b.old_logprobs.tolist() == [[0.0, pytest.approx(-0.3)]]


def test_slice_trims_columns_that_are_padding_in_every_row() -> None:
    b = collate(_three(), PAD, advantages=[1.0, -1.0, 0.5])
    s = b.slice(0, 2)  # longest kept row has 3 tokens -> width 3
    assert s.input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert s.loss_mask.tolist() == [[0, 1, 1], [0, 1, 0]]
    assert s.advantages.tolist() == [1.0, -1.0]
    assert b.slice(1, 2).input_ids.tolist() == [[8, 9]]
    assert b.slice(2, 10).old_logprobs.tolist() == [[0, 0, -2.0, -3.0]]


def test_rejects_empty_input_and_wrong_advantage_count() -> None:
    with pytest.raises(ValueError, match="empty"):
        collate([], PAD)
    with pytest.raises(ValueError, match="need one each"):
        collate(_three(), PAD, advantages=[1.0])
