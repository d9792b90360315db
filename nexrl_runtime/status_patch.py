"""The runtime's progress report on its NexRLJob: the status merge-patch body and path (pure).

Shared by the runtime's reporter and the operator, so the two cannot drift.
"""

from __future__ import annotations

import math
from typing import Any

MERGE_PATCH = "application/merge-patch+json"


def status_path(namespace: str, name: str) -> str:
    """The REST path of a NexRLJob's status subresource."""
    return f"/apis/nexrl.io/v1alpha1/namespaces/{namespace}/nexrljobs/{name}/status"


def progress_patch(step: int, reward: float | None = None, policy_version: int | None = None
                   ) -> dict[str, Any]:
    """The merge-patch body; a reward that is None, NaN or infinite is left out (JSON has no NaN)."""
    status: dict[str, Any] = {"step": int(step)}
    if reward is not None and math.isfinite(reward):
        status["reward"] = round(float(reward), 6)
    if policy_version is not None:
        status["policyVersion"] = int(policy_version)
    return {"status": status}
