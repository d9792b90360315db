"""Recipe configuration: Hydra composition (``loader``), then pydantic validation (``schema``).

The loader, which needs Hydra, is imported on first use, so ``nexrl_runtime.config.schema`` stays
importable where only pydantic is installed (the operator validates inline configs with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nexrl_runtime.config.schema import NexRLConfig

if TYPE_CHECKING:
    from nexrl_runtime.config.loader import ConfigError, load_config

__all__ = ["ConfigError", "NexRLConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "load_config"):
        from nexrl_runtime.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
