"""Pydantic models of the cluster-scoped NexRLQuota: the one source of truth for its CRD schema.

An admin's GPU budget for a set of namespaces, tuned live (`kubectl edit nexrlquota team-a`).
``admission`` reads these models; ``crdgen`` turns them into crds/nexrl.io_nexrlquotas.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .api import GPU_RESOURCE, ApiModel, _config

QUOTA_KIND = "NexRLQuota"
QUOTA_PLURAL = "nexrlquotas"
QUOTA_SINGULAR = "nexrlquota"
QUOTA_SHORT_NAMES = ("nrlq",)


class LabelSelectorRequirement(ApiModel):
    """A metav1.LabelSelectorRequirement."""

    key: str = Field(..., min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(ApiModel):
    """A metav1.LabelSelector; ``{}`` selects every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the selector matches a set of labels (``{}`` matches everything)."""
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            ok = {
                "In": present and labels[req.key] in req.values,
                "NotIn": not present or labels[req.key] not in req.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[req.operator]
            if not ok:
                return False
        return True


class GpuType(ApiModel):
    """A limit on one kind of GPU: a resource name, optionally narrowed to nodes with some labels."""

    # A job counts against a type when it asks for `resource` and could land on its nodes: its
    # scheduling.nodeSelector does not contradict `nodeLabels` (a job without a selector may land
    # anywhere, so it counts against every type of its resource).

    name: str = Field(..., min_length=1, max_length=63, description="shown in messages, e.g. h100")
    resource: str = Field(GPU_RESOURCE, min_length=1, description="extended resource name")
    node_labels: dict[str, str] = Field(default_factory=dict, description="e.g. nvidia.com/gpu.product")
    gpus: int = Field(..., ge=0, description="GPUs of this type that admitted jobs may hold")


class NamespaceSettings(ApiModel):
    """How one namespace's jobs are ordered against the others' in this quota."""

    namespace: str = Field(..., min_length=1, max_length=63)
    priority: int = Field(0, ge=-1000, le=1000, description="higher is served first")
    weight: int = Field(1, ge=1, le=1000, description="fair share among equal priorities")


class NexRLQuotaSpec(ApiModel):
    """Who may use how many GPUs. Absent limits are unlimited; changes apply at once."""

    namespaces: list[str] = Field(default_factory=list, description="covered namespaces, by name")
    namespace_selector: LabelSelector | None = Field(None, description="and/or by namespace labels")
    gpus: int | None = Field(None, ge=0, description="GPUs all admitted jobs together may hold")
    gpu_types: list[GpuType] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    max_gpus_per_job: int | None = Field(None, ge=0, description="larger jobs are rejected")
    max_running_jobs: int | None = Field(None, ge=0, description="admitted jobs at a time; 0 pauses")
    namespace_settings: list[NamespaceSettings] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["namespace"]},
    )

    @model_validator(mode="after")
    def _unique_keys(self) -> NexRLQuotaSpec:
        for field, keys in (("gpuTypes", [t.name for t in self.gpu_types]),
                            ("namespaceSettings", [s.namespace for s in self.namespace_settings])):
            if len(set(keys)) != len(keys):
                raise ValueError(f"spec.{field} has duplicate keys: {sorted(keys)}")
        return self

    def covers(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether the quota selects a namespace (by name or by its labels)."""
        if namespace in self.namespaces:
            return True
        return self.namespace_selector is not None and self.namespace_selector.matches(labels)

    def settings(self, namespace: str) -> NamespaceSettings:
        """The ordering settings of a namespace (defaults when not listed)."""
        listed = next((s for s in self.namespace_settings if s.namespace == namespace), None)
        return listed or NamespaceSettings(namespace=namespace)


class GpuTypeStatus(BaseModel):
    """Use of one GPU type."""

    model_config = _config(extra="ignore")

    name: str
    gpus: int
    in_use: int
    reserved: int


class NexRLQuotaStatus(BaseModel):
    """Written by the operator after every admission pass that changes it."""

    model_config = _config(extra="ignore")

    observed_generation: int | None = None
    namespaces: list[str] | None = Field(None, description="namespaces this quota governs now")
    gpus_in_use: int | None = Field(None, description="GPUs held by admitted jobs")
    gpus_reserved: int | None = Field(None, description="free GPUs held for queued jobs first in line")
    running_jobs: int | None = Field(None, description="admitted jobs (starting or running)")
    queued_jobs: int | None = None
    rejected_jobs: int | None = Field(None, description="jobs that never fit (Failed, QuotaExceeded)")
    gpu_types: list[GpuTypeStatus] | None = None
    message: str | None = None
