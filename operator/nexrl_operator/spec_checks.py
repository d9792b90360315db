"""Checks the CRD schema cannot express (or that API servers without CEL would skip).

Every problem is a FieldError naming the field (API spelling), the value and what is allowed;
the handlers put `str(error)` into the job's status message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .api import GPU_RESOURCE, NexRLJob, NexRLJobSpec, Resources
from .naming import name_problem

RESERVED_OVERRIDE_KEYS = ("mode", "launch_mode", "cluster")
"""Config keys the operator owns: set them through the spec, not through overrides."""
RESERVED_ENGINE_ARGS = ("--port", "--host", "--tensor-parallel-size", "-tp", "--served-model-name")
"""`vllm serve` flags the operator sets from the spec."""


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where, what it holds, what is allowed."""

    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.field}={self.value!r}: {self.message}"


class JobValidationError(ValueError):
    """A NexRLJob that cannot be turned into children; `errors` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def validate_job(spec: NexRLJobSpec, *, name: str | None = None) -> list[FieldError]:
    """Every problem of a spec (and of the job name when given); an empty list means valid."""
    errors = list(_source(spec)) + list(_storage(spec)) + list(_shape(spec)) + list(_gpu_resources(spec))
    errors += list(_overrides(spec.overrides)) + list(_engine_args(spec.inference.args))
    if name is not None and (problem := name_problem(name)):
        errors.insert(0, FieldError("metadata.name", name, problem))
    return errors


def check_job(job: NexRLJob) -> None:
    """Raise JobValidationError when the job (spec and metadata.name) is not valid."""
    if errors := validate_job(job.spec, name=job.metadata.name):
        raise JobValidationError(errors)


def parse_job(body: Mapping[str, Any]) -> NexRLJob:
    """Parse and check a NexRLJob object; schema and semantic problems both raise JobValidationError."""
    try:
        job = NexRLJob.model_validate(dict(body))
    except ValidationError as exc:
        raise JobValidationError(
            [
                FieldError(".".join(str(p) for p in err["loc"]), err.get("input"), err["msg"])
                for err in exc.errors(include_url=False)
            ]
        ) from None
    check_job(job)
    return job


def _source(spec: NexRLJobSpec) -> Iterator[FieldError]:
    if spec.recipe is None and spec.config is None:
        yield FieldError("spec.recipe", None, "set spec.recipe (a path in the image) or spec.config")
    elif spec.recipe is not None and spec.config is not None:
        yield FieldError("spec.config", "<inline recipe>", "spec.recipe is set too; set only one of them")


def _storage(spec: NexRLJobSpec) -> Iterator[FieldError]:
    storage = spec.storage
    if storage is None:
        return
    if storage.existing_claim and storage.size is not None:
        yield FieldError(
            "spec.storage.size", storage.size, "spec.storage.existingClaim is set too; set only one of them"
        )
    elif not storage.existing_claim and storage.size is None:
        yield FieldError("spec.storage", {}, "set spec.storage.existingClaim or spec.storage.size")
    if storage.existing_claim and storage.storage_class_name:
        yield FieldError(
            "spec.storage.storageClassName",
            storage.storage_class_name,
            "only used when the operator creates the claim (spec.storage.size)",
        )


def _shape(spec: NexRLJobSpec) -> Iterator[FieldError]:
    trainer, inference = spec.trainer, spec.inference
    if spec.mode == "self-hosted" and trainer.nodes == 0 and trainer.gpus_per_node > 0:
        yield FieldError(
            "spec.trainer.gpusPerNode",
            trainer.gpus_per_node,
            "spec.trainer.nodes is 0, so no trainer pod would hold these GPUs; "
            "set spec.trainer.nodes >= 1 or spec.trainer.gpusPerNode to 0 (train on the Ray head)",
        )
    if spec.mode == "training-service":
        if trainer.nodes == 0:
            yield FieldError("spec.trainer.nodes", 0, "training-service mode needs at least 1 trainer node")
        if inference.replicas == 0:
            yield FieldError(
                "spec.inference.replicas", 0, "training-service mode needs at least 1 inference replica"
            )
    if inference.replicas > 0 and spec.model is None:
        yield FieldError(
            "spec.model",
            None,
            "spec.model.name is required when spec.inference.replicas > 0 (vLLM serves it)",
        )


def _gpu_resources(spec: NexRLJobSpec) -> Iterator[FieldError]:
    fields: dict[str, tuple[Resources, str]] = {
        "spec.inference.resources": (spec.inference.resources, "spec.inference.gpusPerReplica"),
        "spec.trainer.resources": (spec.trainer.resources, "spec.trainer.gpusPerNode"),
        "spec.rollout.resources": (spec.rollout.resources, "none (rollout workers are CPU pods)"),
        "spec.head.resources": (spec.head.resources, "none (the Ray head is a CPU pod)"),
    }
    for path, (resources, instead) in fields.items():
        for kind in ("limits", "requests"):
            value = getattr(resources, kind).get(GPU_RESOURCE)
            if value is not None:
                yield FieldError(
                    f"{path}.{kind}['{GPU_RESOURCE}']",
                    value,
                    f"GPU counts come from {instead}, not resources",
                )


def _overrides(overrides: list[str]) -> Iterator[FieldError]:
    for i, override in enumerate(overrides):
        key, sep, _ = override.lstrip("+~").partition("=")
        if not key or not (sep or override.startswith("~")):
            yield FieldError(
                f"spec.overrides[{i}]", override, "a Hydra override looks like key=value, +key=value or ~key"
            )
        elif key.split(".")[0] in RESERVED_OVERRIDE_KEYS:
            yield FieldError(
                f"spec.overrides[{i}]",
                override,
                f"'{key}' is set by the operator from the spec (spec.mode, the cluster section); remove it",
            )


def _engine_args(args: list[str]) -> Iterator[FieldError]:
    for i, arg in enumerate(args):
        flag = arg.partition("=")[0]
        if flag in RESERVED_ENGINE_ARGS:
            yield FieldError(
                f"spec.inference.args[{i}]",
                arg,
                f"{flag} is set by the operator (port 8000, spec.model, spec.inference.gpusPerReplica)",
            )
