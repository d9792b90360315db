"""Checks the CRD schema cannot express (or that API servers without CEL would skip).

Every problem is a FieldError naming the field (API spelling) and saying in words what is wrong
and what is allowed (``spec.model is required when ...``, ``spec.gpus: unknown field``); the
handlers put `str(error)` into the job's status message. An inline recipe (``spec.config``) is
checked with the runtime's own schema and wording (``nexrl_runtime.config``), as far as that is
possible without Hydra (see ``_inline_config``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from nexrl_runtime.config.errors import field_path, located_problems, problem_text
from nexrl_runtime.config.schema import NexRLConfig

from .api import GPU_RESOURCE, NexRLJob, NexRLJobSpec, Resources
from .field_error import FieldError
from .naming import name_problem
from .recipe_view import Path, compose, operator_keys, owner_of

RESERVED_ENGINE_ARGS = ("--port", "--host", "--tensor-parallel-size", "-tp", "--served-model-name")
"""`vllm serve` flags the operator sets from the spec."""


class JobValidationError(ValueError):
    """A NexRLJob that cannot be turned into children; `errors` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def validate_job(spec: NexRLJobSpec, *, name: str | None = None, default_image: str | None = None
                 ) -> list[FieldError]:
    """Every problem of a spec (and of the job name when given); an empty list means valid.

    `default_image`: the operator's runtime image for jobs without spec.image (None: it has none,
    so spec.image is required)."""
    errors = list(_source(spec)) + list(_image(spec, default_image)) + list(_storage(spec))
    errors += list(_shape(spec)) + list(_gpu_resources(spec))
    errors += list(_overrides(spec, name or "job")) + list(_engine_args(spec.inference.args))
    errors += list(_inline_config(spec, name or "job")) + list(_runtime_shape(spec, name or "job"))
    if name is not None and (problem := name_problem(name)):
        errors.insert(0, FieldError("metadata.name", name, f"{problem} (got {name!r})"))
    return errors


def check_job(job: NexRLJob, *, default_image: str | None = None) -> None:
    """Raise JobValidationError when the job (spec and metadata.name) is not valid."""
    if errors := validate_job(job.spec, name=job.metadata.name, default_image=default_image):
        raise JobValidationError(errors)


def parse_job(body: Mapping[str, Any], *, default_image: str | None = None) -> NexRLJob:
    """Parse and check a NexRLJob object; schema and semantic problems both raise JobValidationError
    (`default_image` as in `validate_job`)."""
    try:
        job = NexRLJob.model_validate(dict(body))
    except ValidationError as exc:
        raise JobValidationError(
            [FieldError(field_path(loc), None, words) for loc, _, words in located_problems(exc, NexRLJob)]
        ) from None
    check_job(job, default_image=default_image)
    return job


def _source(spec: NexRLJobSpec) -> Iterator[FieldError]:
    if spec.recipe is None and spec.config is None:
        yield FieldError("spec", None,
                         "set spec.recipe (a recipe path in the image) or spec.config (an inline recipe)")
    elif spec.recipe is not None and spec.config is not None:
        yield FieldError("spec.config", "<inline recipe>", "spec.recipe is set too; set only one of them")


def _image(spec: NexRLJobSpec, default_image: str | None) -> Iterator[FieldError]:
    if spec.image is None and not default_image:
        yield FieldError("spec.image", None, "is required: this operator has no default runtime image "
                                             "(nexrl-operator --default-image, the chart's runtime.image)")


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
            "only used when the operator creates the claim (spec.storage.size); remove it",
        )


def _shape(spec: NexRLJobSpec) -> Iterator[FieldError]:
    trainer, inference = spec.trainer, spec.inference
    if spec.mode == "self-hosted" and trainer.nodes == 0 and trainer.gpus_per_node > 0:
        yield FieldError(
            "spec.trainer.gpusPerNode",
            trainer.gpus_per_node,
            f"{trainer.gpus_per_node} GPU(s) per node, but spec.trainer.nodes is 0, so no trainer pod would "
            "hold them; set spec.trainer.nodes >= 1 or spec.trainer.gpusPerNode to 0 (train on the Ray head)",
        )
    if spec.mode == "training-service":
        if trainer.nodes == 0:
            yield FieldError("spec.trainer.nodes", 0, "training-service mode needs 1 trainer node (got 0)")
        if inference.replicas == 0:
            yield FieldError("spec.inference.replicas", 0,
                             "training-service mode needs at least 1 inference replica (got 0)")
    if inference.replicas > 0 and spec.model is None:
        yield FieldError(
            "spec.model",
            None,
            "is required when spec.inference.replicas > 0 (vLLM serves it): set spec.model.name",
        )


def _gpu_resources(spec: NexRLJobSpec) -> Iterator[FieldError]:
    fields: dict[str, tuple[Resources, str]] = {
        "spec.inference.resources": (spec.inference.resources, "spec.inference.gpusPerReplica"),
        "spec.trainer.resources": (spec.trainer.resources, "spec.trainer.gpusPerNode"),
        "spec.rollout.resources": (spec.rollout.resources, "nowhere (rollout workers are CPU pods)"),
        "spec.head.resources": (spec.head.resources, "nowhere (the Ray head is a CPU pod)"),
    }
    for path, (resources, instead) in fields.items():
        for kind in ("limits", "requests"):
            value = getattr(resources, kind).get(GPU_RESOURCE)
            if value is not None:
                yield FieldError(
                    f"{path}.{kind}['{GPU_RESOURCE}']",
                    value,
                    f"GPU counts come from {instead}, not from resources; remove it (got {value!r})",
                )


def _overrides(spec: NexRLJobSpec, name: str) -> Iterator[FieldError]:
    owned = operator_keys(spec, name)
    for i, override in enumerate(spec.overrides):
        key, sep, _ = override.lstrip("+~").partition("=")
        if not key or not (sep or override.startswith("~")):
            yield FieldError(
                f"spec.overrides[{i}]", override,
                f"{override!r} is not a Hydra override: write key=value, +key=value, ++key=value or ~key",
            )
        elif (mine := owner_of(key, owned)) is not None:
            yield FieldError(
                f"spec.overrides[{i}]",
                override,
                f"{override!r} sets {key}, which the operator sets {owned[mine]}; remove it",
            )


def _engine_args(args: list[str]) -> Iterator[FieldError]:
    for i, arg in enumerate(args):
        flag = arg.partition("=")[0]
        if flag in RESERVED_ENGINE_ARGS:
            yield FieldError(
                f"spec.inference.args[{i}]",
                arg,
                f"{flag} is set by the operator (port 8000, spec.model, spec.inference.gpusPerReplica); "
                "remove it",
            )


def _inline_config(spec: NexRLJobSpec, name: str) -> Iterator[FieldError]:
    """Check spec.config as the runtime will load it: the operator's overrides and spec.overrides
    applied, the cluster section the operator writes, then the runtime's NexRLConfig.

    Only Hydra can compose a defaults list or resolve `${...}`: a recipe with a defaults list
    (other than `_self_`) is left to the runtime, and so is every value that is interpolated or
    set by an override only Hydra reads (lists, sweeps, functions)."""
    if spec.config is None or spec.recipe is not None:
        return  # no inline recipe, or _source reports the conflict
    found = compose(spec, name)
    if found is None:
        return
    yield from found.problems
    config = found.config
    config["cluster"] = {}  # replaced by the operator's cluster.yaml (a valid ClusterConfig)
    try:
        NexRLConfig.model_validate(config)
    except ValidationError as exc:
        for loc, kind, message in located_problems(exc, NexRLConfig):
            yield from _config_problem(config, tuple(map(str, loc)), loc, kind, message, found.unchecked,
                                       found.origin)


def _runtime_shape(spec: NexRLJobSpec, name: str) -> Iterator[FieldError]:
    """Shapes the runtime cannot run, from what the operator sees of the recipe (all of spec.config;
    of spec.recipe only what spec.overrides set, the rest is the runtime's to refuse)."""
    found = compose(spec, name)
    if found is None:
        return
    inference = spec.inference
    known, route = found.setting("inference.weight_sync")
    if inference.replicas > 0 and spec.storage is None and known and route == "disk":
        where = found.where("inference.weight_sync")
        said = f"set in {where}" if where else "the runtime's default"
        yield FieldError(
            "spec.storage", None,
            f"is required when spec.inference.replicas > 0 and inference.weight_sync is 'disk' ({said}): "
            "the trainer writes each version's weights file there for the vLLM pods to read; set "
            "spec.storage (a ReadWriteMany claim), or inference.weight_sync=nccl",
        )
    if inference.replicas > 0 and known and route == "none":
        yield found.problem("inference.weight_sync", route, "'none', but the runtime pushes every new policy "
                            "version to the job's vLLM replicas and an engine with no route refuses the "
                            "first push; use 'disk' (with spec.storage) or 'nccl'")
    known, engine = found.setting("inference.engine")
    _, urls = found.setting("inference.base_urls")
    if spec.mode == "self-hosted" and inference.replicas == 0 and known and engine == "openai" and not urls:
        yield FieldError(
            "spec.inference.replicas", 0,
            f"no vLLM replica would run, but {found.where('inference.engine')} sets inference.engine=openai "
            "with no inference.base_urls: set spec.inference.replicas >= 1 (the operator then runs the "
            "servers), or inference.engine=local (in-process generation)",
        )


def _config_problem(config: dict[str, Any], path: Path, loc: tuple[Any, ...], kind: str, message: str,
                    unchecked: set[Path], origin: dict[Path, int]) -> Iterator[FieldError]:
    """The FieldError of one runtime schema problem, unless only Hydra could tell."""
    if any(path[:n] in unchecked for n in range(len(path) + 1)) and kind != "extra_forbidden":
        return
    node: Any = config
    for part in loc:  # an interpolated value (or one under it) resolves only in the runtime
        if isinstance(node, str) and "${" in node:
            return
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
            break
    if isinstance(node, str) and "${" in node:
        return
    setter = next((origin[path[:n]] for n in range(len(path), 0, -1) if path[:n] in origin), None)
    if setter is not None:
        yield FieldError(f"spec.overrides[{setter}]", node, problem_text(field_path(loc), message))
    else:
        yield FieldError(field_path(loc, "spec.config"), node, message)

