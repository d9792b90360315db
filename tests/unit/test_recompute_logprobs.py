"""trainer.recompute_old_logprobs: the trainer's own logprobs of the batch replace the sampled ones
in the PPO ratio, and the gap between them is logged."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from nexrl_runtime.config.schema import TrainerConfig
from nexrl_runtime.trainer import GRPOTrainer, collate
from nexrl_runtime.trainer.loop import with_old_logprobs
from nexrl_runtime.types import Batch
from tests.unit.test_trainers import PAD, make_batch, tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread in each test (not at import: other tests of the session change it), so
    batched and one-at-a-time forwards reduce in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def perturbed(batch: Batch, scale: float = 0.5, seed: int = 3) -> Batch:
    """The same trajectories with sampling logprobs off by noise (another engine's numerics)."""
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for t in batch.trajectories:
        noise = scale * torch.randn(len(t.logprobs), generator=g)
        moved = [lp + float(n) * m for lp, n, m in zip(t.logprobs, noise, t.loss_mask, strict=True)]
        trajs.append(replace(t, logprobs=moved))
    return Batch(trajs)


def cfg(recompute: bool) -> TrainerConfig:
    return TrainerConfig.model_validate(
        {
            "optim": {"lr": 1e-2, "grad_clip": None},
            "mini_batch_size": 4,
            "micro_batch_size": 3,
            "ppo_epochs": 2,
            "recompute_old_logprobs": recompute,
        }
    )


def weights_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def test_with_old_logprobs_replaces_trained_tokens_and_measures_the_gap() -> None:
    batch = make_batch(tiny_model())
    data = collate(batch.trajectories, PAD)
    new = data.old_logprobs + 0.25 + 0.5 * (torch.arange(data.input_ids.shape[1]) == 3)
    out, gap = with_old_logprobs(data, new)
    assert torch.equal(out.old_logprobs, new * data.loss_mask)
    on_3 = float((data.loss_mask[:, 3]).sum())
    assert gap["old_logprob_diff_max"] == pytest.approx(0.75)
    assert gap["old_logprob_diff_mean"] == pytest.approx(0.25 + 0.5 * on_3 / float(data.loss_mask.sum()))


def test_same_model_gap_is_zero_and_a_perturbed_sampler_is_measured_and_replaced() -> None:
    model = tiny_model()
    clean = make_batch(model)  # logprobs from the model itself, one sequence at a time
    noisy = perturbed(clean)

    same = GRPOTrainer(copy.deepcopy(model), cfg(recompute=True), PAD).train_step(clean)
    assert same["old_logprob_diff_max"] < 1e-5

    fixed = GRPOTrainer(copy.deepcopy(model), cfg(recompute=True), PAD)
    got = fixed.train_step(noisy)
    assert got["old_logprob_diff_mean"] > 0.2 and got["old_logprob_diff_max"] > 0.5
    # trained on the recomputed logprobs: as if the sampler had been exact ...
    exact = GRPOTrainer(copy.deepcopy(model), cfg(recompute=False), PAD)
    want = exact.train_step(clean)
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-6)
    assert weights_gap(fixed.model, exact.model) < 1e-6
    # ... and not as on the sampled ones
    naive = GRPOTrainer(copy.deepcopy(model), cfg(recompute=False), PAD)
    naive_metrics = naive.train_step(noisy)
    assert "old_logprob_diff_mean" not in naive_metrics
    assert weights_gap(naive.model, exact.model) > 1e-4
