"""The runtime's progress report on its NexRLJob: a merge-patch of ``status``.

The runtime writes it (``nexrl_runtime.reporting``); body, path and keys live in the shared
contract ``nexrl_runtime.contract`` and are re-exported here. The runtime writes only
``RUNTIME_KEYS``; the operator never writes them. See docs/operator-runtime.md.
"""

from __future__ import annotations

from nexrl_runtime.contract import MERGE_PATCH, RUNTIME_KEYS, progress_patch, status_path

__all__ = ["MERGE_PATCH", "RUNTIME_KEYS", "progress_patch", "status_path"]
