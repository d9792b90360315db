"""TensorBoard events of a run (`logging.backends: [jsonl, tensorboard]`): every numeric metric of
every RL step as a scalar under `<output_dir>/tensorboard`. Needs the `tensorboard` package."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nexrl_runtime.config.errors import ConfigError


class TensorBoardSink:
    """A TrackerSink writing scalars with torch's SummaryWriter."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError(
                "logging.backends: 'tensorboard' needs the tensorboard package (pip install tensorboard)"
            ) from err
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                self.writer.add_scalar(key, float(value), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
