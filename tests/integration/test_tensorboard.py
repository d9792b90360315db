"""`logging.backends: [jsonl, tensorboard]`: the run's step metrics, read back with TensorBoard's reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import run_arithmetic

pytest.importorskip("tensorboard")

SMALL = [
    "warm_start.steps=0",
    "model.hidden_size=32",
    "model.num_layers=1",
    "data.batch_size=4",
    "data.rollout_repeat_n=4",
    "validation.limit=4",
    "validation.every=2",
    "logging.plot=false",
    "total_steps=3",
]


def test_tensorboard_events_hold_the_step_metrics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, rows = run_arithmetic(tmp_path, [*SMALL, "logging.backends=[jsonl,tensorboard]"])
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"reward_mean", "loss", "errors_evaluator", "num_tokens", "val_accuracy"} <= tags
    reward = acc.Scalars("reward_mean")
    assert [e.step for e in reward] == [1, 2, 3]
    assert [e.value for e in reward] == pytest.approx([r["reward_mean"] for r in rows])
    assert (tmp_path / "metrics.jsonl").exists()  # jsonl is always written


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    from nexrl_runtime.config import ConfigError

    with pytest.raises(ConfigError, match=r"logging.backends"):
        run_arithmetic(tmp_path, [*SMALL, "logging.backends=[wandb]"])
