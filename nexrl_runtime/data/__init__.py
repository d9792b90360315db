"""Item files and the rollout data stream."""

from nexrl_runtime.data.loader import DataLoader, Item
from nexrl_runtime.data.readers import DataError, detect_format, load_items, resolve_path

__all__ = ["DataError", "DataLoader", "Item", "detect_format", "load_items", "resolve_path"]
