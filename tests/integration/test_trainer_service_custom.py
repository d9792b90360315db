"""A recipe's own GRPO subclass (`file.py:Class`) through the training service over real HTTP: the
client computes its advantages with the same registry as in-process (non-zero, not the all-zero
advantages a name check gave it), with the old logprobs recomputed by the service and a warmup +
linear lr schedule stepped by the service; the run equals the in-process one."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from nexrl_runtime.registry import resolve_class
from nexrl_runtime.trainer import TRAINERS, Trainer
from nexrl_runtime.trainer_service.service_trainer import TrainingServiceTrainer
from tests.integration.test_trainer_service import (
    LOSS_ATOL,
    LOSS_RTOL,
    WEIGHT_ATOL,
    config,
    make_batch,
    max_gap,
    policy,
    service,
)

CUSTOM = textwrap.dedent(
    '''
    """A recipe's GRPO: GRPO's advantages, its own loss (the policy term doubled)."""
    from nexrl_runtime.trainer import GRPOTrainer


    class DoubledGRPO(GRPOTrainer):
        def compute_loss(self, micro, norm):
            loss, metrics = super().compute_loss(micro, norm)
            return 2 * loss, metrics
    '''
)


def test_custom_grpo_subclass_trains_through_the_service(tmp_path: Path) -> None:
    (tmp_path / "my_trainer.py").write_text(CUSTOM)
    cfg = config(
        tmp_path,
        "trainer.type=my_trainer.py:DoubledGRPO",
        "trainer.recompute_old_logprobs=true",
        "trainer.mini_batch_size=4",
        "trainer.micro_batch_size=3",
        "trainer.lr_schedule.kind=linear",
        "trainer.lr_schedule.warmup_steps=2",
        "trainer.lr_schedule.decay_steps=4",
    )
    cfg = cfg.model_copy(update={"recipe_dir": str(tmp_path)})
    model, pad = policy(cfg)
    start = copy.deepcopy(model.state_dict())
    batch = make_batch(model)  # sampled logprobs = the model's own + noise
    cls = resolve_class(cfg.trainer.type, TRAINERS, Trainer, cfg.recipe_dir)
    local = cls(model, cfg.trainer, pad)
    with service(cfg) as client:
        health = client.health()
        assert cfg.trainer.type in health.losses
        remote = TrainingServiceTrainer(client, cfg.trainer, pad, cfg.recipe_dir)
        remote.check_service(health)
        assert not remote.drops_zero_advantage  # its own loss: every datum is sent
        remote.load_state_dict(start)
        lrs = []
        for _ in range(2):
            want, got = local.train_step(batch), remote.train_step(batch)
            assert got["adv_abs_mean"] == want["adv_abs_mean"] > 0.5
            assert got["old_logprob_diff_mean"] == pytest.approx(want["old_logprob_diff_mean"], abs=1e-6)
            assert got["old_logprob_diff_mean"] > 0.1  # the noise the recompute took out
            assert got["loss"] == pytest.approx(want["loss"], rel=LOSS_RTOL, abs=LOSS_ATOL)
            assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
            lrs.append(got["lr"])
        remote_weights = remote.state_dict()
    assert lrs[0] != lrs[1]
    gap, moved = max_gap(remote_weights, local.model.state_dict()), max_gap(start, local.model.state_dict())
    assert gap < WEIGHT_ATOL and moved > 20 * WEIGHT_ATOL, f"weight gap {gap:.2e}, moved {moved:.2e}"
