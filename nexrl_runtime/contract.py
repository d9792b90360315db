"""The operator-runtime contract: what the operator writes for the runtime and what the runtime
writes back. Pydantic only (no torch, Hydra or Kubernetes client), so both sides import it.

* ``cluster.yaml`` in the job's ConfigMap is a dumped ``ClusterConfig``;
* the runtime's progress report, and its refusal of a config at start-up, are merge-patches of the
  NexRLJob's ``status`` with ``RUNTIME_KEYS``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MERGE_PATCH = "application/merge-patch+json"
RUNTIME_KEYS = ("step", "reward", "policyVersion", "configError")
"""The status keys the runtime writes; the operator never writes them."""


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClusterInference(Strict):
    base_urls: list[str] = Field(default_factory=list)
    replicas: int = Field(0, ge=0)
    gpus_per_replica: int = Field(0, ge=0)


class ClusterTrainer(Strict):
    nodes: int = Field(0, ge=0)
    gpus_per_node: int = Field(0, ge=0)
    base_url: str | None = None


class ClusterConfig(Strict):
    """Written by the operator: where the services are and how many GPUs the pods hold, so the
    runtime asks Ray for exactly what the pods have."""

    namespace: str | None = None
    job_name: str | None = None
    ray_address: str | None = None
    inference: ClusterInference = ClusterInference()
    trainer: ClusterTrainer = ClusterTrainer()
    rollout_workers: int = Field(0, ge=0)


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


def config_error_patch(message: str) -> dict[str, Any]:
    """The merge-patch body of a config the runtime refused at start-up (the operator then fails the
    job with ValidationFailed instead of restarting it with the same config)."""
    return {"status": {"configError": message[:4000]}}
