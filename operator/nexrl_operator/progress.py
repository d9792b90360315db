"""The runtime's progress report on its NexRLJob: a merge-patch of ``status`` (pure; no kopf, no client).

The runtime (in the Ray head) sends ``PATCH <status_path(ns, name)>`` with
``Content-Type: application/merge-patch+json`` and the body of ``progress_patch``. It writes only
``RUNTIME_KEYS``; the operator never writes them. See docs/operator-runtime.md.
"""

from __future__ import annotations

import math
from typing import Any

from .api import GROUP, PLURAL, VERSION

RUNTIME_KEYS = ("step", "reward", "policyVersion")
MERGE_PATCH = "application/merge-patch+json"


def status_path(namespace: str, name: str) -> str:
    """The REST path of a job's status subresource (env NEXRL_NAMESPACE / NEXRL_JOB_NAME in the pods)."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"


def progress_patch(step: int, reward: float | None = None, policy_version: int | None = None
                   ) -> dict[str, Any]:
    """The merge-patch body; a reward that is None, NaN or infinite is left out (JSON has no NaN)."""
    status: dict[str, Any] = {"step": int(step)}
    if reward is not None and math.isfinite(reward):
        status["reward"] = round(float(reward), 6)
    if policy_version is not None:
        status["policyVersion"] = int(policy_version)
    return {"status": status}
