"""The runtime's progress report on its NexRLJob: a merge-patch of ``status``.

The runtime writes it (``nexrl_runtime.reporting``); body and path live in
``nexrl_runtime.status_patch`` and are re-exported here, one definition for both sides. The
runtime writes only ``RUNTIME_KEYS``; the operator never writes them. See docs/operator-runtime.md.
"""

from __future__ import annotations

from nexrl_runtime.status_patch import MERGE_PATCH, progress_patch, status_path

RUNTIME_KEYS = ("step", "reward", "policyVersion")

__all__ = ["MERGE_PATCH", "RUNTIME_KEYS", "progress_patch", "status_path"]
