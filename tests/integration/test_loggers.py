"""`logging.backends`: the run's step metrics read back with each tracker's own reader
(TensorBoard's event reader, MLflow's client on a file store, an offline W&B run's record log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import SHRINK, run_arithmetic

SMALL = [*SHRINK, "validation.every=2", "logging.plot=false", "total_steps=3"]


def test_tensorboard_events_hold_the_step_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
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


def test_mlflow_run_holds_the_step_metrics(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    _, rows = run_arithmetic(tmp_path, [*SMALL, "logging.backends=[jsonl,mlflow]", "logging.project=t"])
    client = MlflowClient((tmp_path / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("t")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    reward = client.get_metric_history(run.info.run_id, "reward_mean")
    assert [m.step for m in reward] == [1, 2, 3]
    assert [m.value for m in reward] == pytest.approx([r["reward_mean"] for r in rows])
    assert "val_accuracy" in run.data.metrics


def test_offline_wandb_run_holds_the_step_metrics(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    import wandb_reader

    offline = ["logging.backends=[jsonl,wandb]", "logging.wandb_mode=offline"]
    _, rows = run_arithmetic(tmp_path, [*SMALL, *offline])
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    logged = [r for r in wandb_reader.history(run_dir) if "reward_mean" in r]  # step 0: held-out only
    assert [r["_step"] for r in logged] == [1, 2, 3]
    assert [r["reward_mean"] for r in logged] == pytest.approx([r["reward_mean"] for r in rows])


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    from nexrl_runtime.config import ConfigError

    with pytest.raises(ConfigError, match=r"logging.backends"):
        run_arithmetic(tmp_path, [*SMALL, "logging.backends=[neptune]"])
