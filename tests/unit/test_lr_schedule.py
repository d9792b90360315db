"""trainer.lr_schedule: the factor as a pure function, the trainer's lr per optimizer step, and a
resume mid-schedule (Trainer.save/load and the run checkpoint's files) continuing the same sequence."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nexrl_runtime import checkpoint as ckpt
from nexrl_runtime.config.schema import LRScheduleConfig, NexRLConfig, TrainerConfig
from nexrl_runtime.trainer import GRPOTrainer
from nexrl_runtime.trainer.schedule import lr_factor
from tests.unit.test_trainers import PAD, make_batch, tiny_model

torch.set_num_threads(1)


def sched(**kw: object) -> LRScheduleConfig:
    return LRScheduleConfig.model_validate(kw)


def test_factors_of_each_kind() -> None:
    const = sched(warmup_steps=4)
    assert [lr_factor(k, const) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    lin = sched(kind="linear", warmup_steps=2, decay_steps=4, min_lr_ratio=0.2)
    assert [lr_factor(k, lin) for k in range(8)] == pytest.approx([0.5, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.2])
    cos = sched(kind="cosine", decay_steps=4)
    want = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert [lr_factor(k, cos) for k in range(6)] == pytest.approx([*want, 0.0])
    assert lr_factor(2, cos) == pytest.approx(0.5)


@given(
    kind=st.sampled_from(["constant", "linear", "cosine"]),
    warmup=st.integers(0, 20),
    decay=st.integers(1, 50),
    floor=st.floats(0.0, 1.0),
)
def test_factor_ramps_up_then_never_rises_and_stays_in_bounds(
    kind: str, warmup: int, decay: int, floor: float
) -> None:
    cfg = sched(kind=kind, warmup_steps=warmup, decay_steps=decay, min_lr_ratio=floor)
    f = [lr_factor(k, cfg) for k in range(warmup + decay + 5)]
    assert all(a < b for a, b in itertools.pairwise(f[:warmup]))  # warmup rises
    after = f[max(warmup - 1, 0) :]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(after))  # then never rises
    low = floor if kind != "constant" else 1.0
    assert all(low - 1e-12 <= x <= 1.0 + 1e-12 for x in after)
    assert f[-1] == pytest.approx(low)


def test_config_shorthand_derived_decay_and_hash_of_old_checkpoints() -> None:
    base = {"data": {"path": "d.jsonl"}, "rollout": {"evaluator": "e.py:E"}, "total_steps": 10}
    base |= {"data": {"path": "d.jsonl", "batch_size": 2, "rollout_repeat_n": 4}}
    cfg = NexRLConfig.model_validate(
        {**base, "trainer": {"lr_schedule": "cosine", "mini_batch_size": 3, "ppo_epochs": 2}}
    )
    # 10 RL steps x 2 epochs x ceil(8 / 3) mini-batches
    assert cfg.trainer.lr_schedule == LRScheduleConfig(kind="cosine", decay_steps=60)
    warm = {"kind": "linear", "warmup_steps": 5}
    cfg = NexRLConfig.model_validate({**base, "trainer": {"lr_schedule": warm}})
    assert cfg.trainer.lr_schedule.decay_steps == 10 - 5
    # at their defaults the new fields stay out of the hash: checkpoints from before them resume
    plain = ckpt.hashed_config(NexRLConfig.model_validate(base))
    assert "lr_schedule" not in plain["trainer"] and "recompute_old_logprobs" not in plain["trainer"]
    assert ckpt.hashed_config(cfg)["trainer"]["lr_schedule"]["kind"] == "linear"
    with pytest.raises(ValueError, match="decay_steps is required"):
        GRPOTrainer(tiny_model(), TrainerConfig(lr_schedule="linear"), PAD)


CFG = TrainerConfig.model_validate(
    {
        "optim": {"lr": 1e-2, "grad_clip": None},
        "mini_batch_size": 3,  # 7 trajectories: 3 optimizer steps per train_step
        "lr_schedule": {"kind": "cosine", "warmup_steps": 2, "decay_steps": 7, "min_lr_ratio": 0.1},
        "grpo": {"entropy_coef": 0.01},
    }
)


def test_lr_is_stepped_once_per_optimizer_step() -> None:
    model = tiny_model()
    trainer = GRPOTrainer(model, CFG, PAD)
    batch = make_batch(model)
    for step in range(4):
        metrics = trainer.train_step(batch)
        want = [1e-2 * lr_factor(3 * step + k, CFG.lr_schedule) for k in range(3)]
        assert metrics["lr"] == pytest.approx(sum(want) / 3, rel=1e-12)
    assert trainer.scheduler.last_epoch == 12


@pytest.mark.parametrize("files", ["save-load", "checkpoint-folder"])
def test_resume_mid_schedule_continues_the_same_lr_sequence(tmp_path: Path, files: str) -> None:
    model = tiny_model()
    batch = make_batch(model)
    whole = GRPOTrainer(copy.deepcopy(model), CFG, PAD)
    want = [whole.train_step(batch) for _ in range(4)]

    first = GRPOTrainer(copy.deepcopy(model), CFG, PAD)
    got = [first.train_step(batch) for _ in range(2)]
    resumed = GRPOTrainer(tiny_model(seed=5), CFG, PAD)
    if files == "save-load":
        first.save(tmp_path / "t.pt")
        resumed.load(tmp_path / "t.pt")
    else:
        first.save_checkpoint(tmp_path)
        assert resumed.load_checkpoint(tmp_path) == 2
    got += [resumed.train_step(batch) for _ in range(2)]
    assert [m["lr"] for m in got] == [m["lr"] for m in want]
    assert len({m["lr"] for m in want}) == 4  # the lr did move
    assert got == want  # losses, grad norms: the same run
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_from_before_schedules(tmp_path: Path) -> None:
    model = tiny_model()
    old = GRPOTrainer(model, TrainerConfig(), PAD)
    old.save_checkpoint(tmp_path)
    state = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    del state["scheduler"]  # what optimizer.pt held before trainer.lr_schedule existed
    torch.save(state, tmp_path / "optimizer.pt")
    assert GRPOTrainer(tiny_model(), TrainerConfig(), PAD).load_checkpoint(tmp_path) == 0
    with pytest.raises(ValueError, match=r"optimizer\.pt has no lr-scheduler state"):
        GRPOTrainer(tiny_model(), CFG, PAD).load_checkpoint(tmp_path)
