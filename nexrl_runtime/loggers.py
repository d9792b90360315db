"""The optional experiment trackers of `logging.backends` besides metrics.jsonl: TensorBoard,
Weights & Biases and MLflow. Each is a TrackerSink (every RL step's numeric metrics) and is imported
only when a run asks for it, so none of these packages is a dependency of the runtime."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.tracking import TrackerSink


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a step's metrics (trackers take no strings, NaN or inf)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _missing(backend: str, package: str) -> ConfigError:
    return ConfigError(f"logging.backends: {backend!r} needs the {package} package (pip install {package})")


class WandbSink:
    """Logs each step to a W&B run named after `run_name`; `logging.wandb_mode: offline` writes the
    run under `<output_dir>/wandb` for a later `wandb sync` (no account or network needed)."""

    def __init__(self, config: NexRLConfig) -> None:
        try:
            import wandb
        except ImportError as err:
            raise _missing("wandb", "wandb") from err
        log = config.logging
        self.run = wandb.init(
            project=log.project,
            name=config.run_name,
            dir=str(Path(config.output_dir)),
            mode=log.wandb_mode,
            config=config.model_dump(mode="json"),
            reinit="create_new",
        )

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(numeric(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowSink:
    """Logs each step to an MLflow run in experiment `logging.project`. The tracking URI is
    `logging.mlflow_tracking_uri`, else $MLFLOW_TRACKING_URI, else a file store in
    `<output_dir>/mlruns` (MLflow keeps that store in maintenance mode; we opt in to it explicitly)."""

    def __init__(self, config: NexRLConfig) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise _missing("mlflow", "mlflow-skinny") from err
        uri = config.logging.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(config.output_dir).resolve() / "mlruns").as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri = uri
        self.client = MlflowClient(uri)
        name = config.logging.project
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=config.run_name).info.run_id
        self.client.log_dict(self.run_id, config.model_dump(mode="json"), "config.json")

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = _millis()
        batch = [Metric(k, v, now, step) for k, v in numeric(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _millis() -> int:
    import time

    return int(time.time() * 1000)


def backend_sinks(config: NexRLConfig) -> list[TrackerSink]:
    """The sinks `logging.backends` names, in its order (jsonl is the Tracker itself)."""
    sinks: list[TrackerSink] = []
    for backend in config.logging.backends:
        if backend == "tensorboard":
            from nexrl_runtime.tb import TensorBoardSink

            sinks.append(TensorBoardSink(Path(config.output_dir) / "tensorboard"))
        elif backend == "wandb":
            sinks.append(WandbSink(config))
        elif backend == "mlflow":
            sinks.append(MLflowSink(config))
    return sinks
