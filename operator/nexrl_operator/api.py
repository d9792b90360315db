"""Pydantic models of the NexRLJob custom resource: the one source of truth for the CRD schema.

Python uses snake_case; YAML and the Kubernetes API use the camelCase aliases. `crdgen` turns
these models into the CRD's openAPIV3Schema, the builders read them, the handlers parse with them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "nexrl.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NexRLJob"
PLURAL = "nexrljobs"
SINGULAR = "nexrljob"
SHORT_NAMES = ("nrl",)
GPU_RESOURCE = "nvidia.com/gpu"

Mode = Literal["self-hosted", "training-service"]
Quantity = int | str
"""A Kubernetes resource quantity (`4`, `"500m"`, `"16Gi"`); the CRD marks it int-or-string."""


def _config(extra: Literal["forbid", "ignore"] = "forbid", **schema: Any) -> ConfigDict:
    """Model config shared by every API model: camelCase aliases, snake_case names both accepted."""
    return ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra=extra,
        json_schema_extra=schema or None,
    )


def _exactly_one(where: str, first: str, second: str) -> ConfigDict:
    """Model config with a CEL rule: exactly one of two fields (API spelling) is set."""
    rule = {"rule": f"has(self.{first}) != has(self.{second})",
            "message": f"set exactly one of {where}.{first} and {where}.{second}"}
    return _config(**{"x-kubernetes-validations": [rule]})


class ApiModel(BaseModel):
    """Base of the spec models: unknown fields are errors (the API server prunes them anyway)."""

    model_config = _config()


class Resources(ApiModel):
    """Container resources without GPUs: GPU counts come from the dedicated `gpus*` fields."""

    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class ModelSpec(ApiModel):
    """The policy model: `name` is what vLLM serves it as, `path` a local folder (image or volume)."""

    name: str = Field(..., min_length=1, description="model name, e.g. Qwen/Qwen2.5-1.5B-Instruct")
    path: str | None = Field(None, min_length=1, description="local weights folder; default: name")


class InferenceSpec(ApiModel):
    """The vLLM OpenAI-compatible servers (a Deployment behind a headless Service)."""

    engine: Literal["vllm"] = "vllm"
    replicas: int = Field(1, ge=0, description="inference servers; 0 = none")
    gpus_per_replica: int = Field(1, ge=1, le=64, description="GPUs per server (tensor parallel size)")
    image: str | None = Field(None, min_length=1, description="engine image; default: the runtime image")
    args: list[str] = Field(default_factory=list, description="extra `vllm serve` arguments")
    resources: Resources = Field(default_factory=Resources)


class TrainerSpec(ApiModel):
    """Trainer GPUs: a Ray worker group (self-hosted) or `nexrl serve-trainer` pods (training-service)."""

    nodes: int = Field(1, ge=0, description="trainer pods")
    gpus_per_node: int = Field(1, ge=0, le=64, description="GPUs per trainer pod")
    resources: Resources = Field(default_factory=Resources)


class RolloutSpec(ApiModel):
    """CPU rollout workers: a Ray worker group of `workers` pods."""

    workers: int = Field(1, ge=0, description="rollout worker pods (0: rollouts run on the head)")
    resources: Resources = Field(default_factory=Resources)


class HeadSpec(ApiModel):
    """The Ray head pod, which runs the NexRL controller (the Ray job driver)."""

    resources: Resources = Field(default_factory=Resources)


class StorageSpec(ApiModel):
    """A volume mounted in every pod: an existing PVC, or a new one owned by the job."""

    model_config = _exactly_one("storage", "existingClaim", "size")

    existing_claim: str | None = Field(None, min_length=1, description="use this PVC (not owned)")
    size: Quantity | None = Field(None, description="create a PVC of this size, deleted with the job")
    storage_class_name: str | None = Field(None, min_length=1)
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany"]] = Field(
        default_factory=lambda: ["ReadWriteMany"], min_length=1
    )
    mount_path: str = Field("/data", pattern=r"^/", description="where every pod mounts the volume")


class Toleration(ApiModel):
    """A core/v1 Toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class SchedulingSpec(ApiModel):
    """Placed on every pod template; `queueName` becomes Kueue's queue-name label on the workloads."""

    priority_class_name: str | None = Field(None, min_length=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    queue_name: str | None = Field(None, min_length=1, max_length=63, description="Kueue LocalQueue")
    queue_priority: int = Field(
        0, ge=-1000, le=1000,
        description="order among this namespace's jobs waiting for a NexRLQuota (higher first); "
                    "not the pods' priority",
    )


class NexRLJobSpec(ApiModel):
    """What to train and with how many GPUs."""

    model_config = _exactly_one("spec", "recipe", "config")

    recipe: str | None = Field(None, min_length=1, description="recipe YAML path inside the image")
    config: dict[str, Any] | None = Field(None, description="inline recipe (instead of spec.recipe)")
    overrides: list[str] = Field(default_factory=list, description="Hydra overrides, e.g. total_steps=50")
    image: str | None = Field(
        None, min_length=1,
        description="runtime image (Ray head, workers, trainer); default: nexrl-operator --default-image",
    )
    mode: Mode = Field("self-hosted", description="self-hosted: trainer in Ray; training-service: pods")
    model: ModelSpec | None = None
    inference: InferenceSpec = Field(InferenceSpec())
    trainer: TrainerSpec = Field(TrainerSpec())
    rollout: RolloutSpec = Field(RolloutSpec())
    head: HeadSpec = Field(HeadSpec())
    storage: StorageSpec | None = None
    scheduling: SchedulingSpec = Field(SchedulingSpec())
    suspend: bool = Field(False, description="stop all pods (GPUs freed); unsuspend to start again")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="passed to the RayJob")
    max_restarts: int = Field(0, ge=0, description="restarts of a failed run before the job fails")


class Phase(StrEnum):
    """Lifecycle phase shown in `kubectl get nexrljobs`."""

    PENDING = "Pending"
    QUEUED = "Queued"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class Condition(BaseModel):
    """A metav1.Condition."""

    model_config = _config(extra="ignore")

    type: str = Field(..., min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., min_length=1, max_length=1024)
    message: str = Field(..., max_length=32768)
    last_transition_time: str = Field(..., json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(None, ge=0)


class NexRLJobStatus(BaseModel):
    """Written by the operator only; unknown keys are kept (kopf may store its progress here)."""

    model_config = _config(extra="ignore", **{"x-kubernetes-preserve-unknown-fields": True})

    phase: Phase | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = None
    step: int | None = None
    reward: float | None = None
    policy_version: int | None = None
    config_error: str | None = Field(None, description="written by the runtime: why it refused the "
                                     "resolved config at start-up (the job fails with ValidationFailed)")
    gpus: int | None = Field(None, description="total GPUs the job's spec requests (the REQUESTED column)")
    held_gpus: int | None = Field(None, description="GPUs the job holds now (the HELD column): what it was "
                                  "admitted for while it runs; 0 when queued, suspended or finished")
    admitted_gpus: int | None = Field(None, description="GPUs a NexRLQuota admitted the job for (while held)")
    inference_replicas: int | None = Field(None, description="inference replicas the running job had all "
                                           "ready (what a scale-up starts from)")
    children: dict[str, str] = Field(default_factory=dict, description="role -> child object name")
    message: str | None = None
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    restarts: int | None = None


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class NexRLJob(BaseModel):
    """A whole NexRLJob object as stored by the API server."""

    model_config = _config(extra="ignore")

    api_version: Literal["nexrl.io/v1alpha1"] = API_VERSION
    kind: Literal["NexRLJob"] = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NexRLJobSpec
    status: NexRLJobStatus | None = None


def inference_gpus(spec: NexRLJobSpec) -> int:
    """GPUs held by the inference servers."""
    return spec.inference.replicas * spec.inference.gpus_per_replica


def trainer_gpus(spec: NexRLJobSpec) -> int:
    """GPUs held by the trainer pods (Ray worker group or training service)."""
    return spec.trainer.nodes * spec.trainer.gpus_per_node


def total_gpus(spec: NexRLJobSpec) -> int:
    """Every GPU the job's pods request while running (the `GPUs` printer column)."""
    return inference_gpus(spec) + trainer_gpus(spec)
