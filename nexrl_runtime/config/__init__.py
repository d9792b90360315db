"""Recipe configuration: Hydra composition, then pydantic validation."""

from nexrl_runtime.config.schema import NexRLConfig

__all__ = ["NexRLConfig"]
