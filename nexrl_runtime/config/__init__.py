"""Recipe configuration: Hydra composition, then pydantic validation."""

from nexrl_runtime.config.loader import ConfigError, load_config
from nexrl_runtime.config.schema import NexRLConfig

__all__ = ["ConfigError", "NexRLConfig", "load_config"]
