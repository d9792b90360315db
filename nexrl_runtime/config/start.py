"""Checks of a validated config that need more than its own values (the folders it names, the
cluster section, pairs of fields), run when a controller starts, before any model is built.

Each failure is a ConfigError whose message starts with the field (`output_dir: ...`), so the CLI
prints `nexrl: <field>: ...` and exits 2. No torch here: these run in a second or less.
"""

from __future__ import annotations

from pathlib import Path

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import NexRLConfig


def service_url(config: NexRLConfig) -> str:
    """The training service's URL (training-service mode); a ConfigError naming the field if missing."""
    url = config.cluster.trainer.base_url
    if not url:
        raise ConfigError(
            "cluster.trainer.base_url: mode=training-service needs the training service's URL (the "
            "operator writes it; locally start `nexrl serve-trainer -c RECIPE --port 8000` and pass "
            "cluster.trainer.base_url=http://127.0.0.1:8000)"
        )
    return url


def make_folder(path: str | Path, field: str) -> Path:
    """Create `path` (and its parents) now, so that a folder the run cannot write fails at start-up."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{field}: cannot create the folder {path}: {err.strerror or err}") from err
    if not folder.is_dir():
        raise ConfigError(f"{field}: {path} is not a folder")
    return folder


def check_start(config: NexRLConfig) -> None:
    """What the local and Ray controllers refuse before building anything."""
    if config.mode == "training-service":
        service_url(config)
    make_folder(config.output_dir, "output_dir")
    if config.checkpoint.every:
        make_folder(config.checkpoint_dir, "checkpoint.dir" if config.checkpoint.dir else "output_dir")
