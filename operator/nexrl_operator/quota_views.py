"""Pure digests of the objects admission reads (jobs, NexRLQuotas, ResourceQuotas), and back.

The operator indexes these digests (kopf indexes) and hands them to ``admission.plan``; this
module also turns a plan's outcome into the NexRLQuota status and the spec the builders get.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from . import spec_changes
from .admission import Demand, Quota, QuotaUsage, ResourceQuotaLimit
from .api import GPU_RESOURCE, NexRLJobSpec, Phase, total_gpus
from .job_status import find_condition, is_finished
from .quota_api import GpuTypeStatus, NexRLQuotaSpec, NexRLQuotaStatus
from .spec_checks import JobValidationError, parse_job

HELD_PHASES = frozenset({Phase.PROVISIONING, Phase.RUNNING})
"""Phases in which a job that predates quotas (no Admitted condition) holds its GPUs."""
_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


@dataclasses.dataclass(frozen=True)
class JobView:
    """A job as admission and the status writer of waiting jobs need it."""

    uid: str
    namespace: str
    name: str
    generation: int
    status: Mapping[str, Any]
    spec: NexRLJobSpec | None = None
    """None when the spec is invalid"""
    applied: Mapping[str, Any] | None = None
    """the spec the children were created from (None before they were)"""
    restart_fields: tuple[str, ...] = ()
    demand: Demand | None = None
    """None when the job takes no part in admission: invalid, finished, suspended or Kueue's"""
    waiting_since: str = ""


@dataclasses.dataclass(frozen=True)
class QuotaView:
    name: str
    quota: Quota | None
    """None when the spec does not parse (``error`` says why)"""
    generation: int
    status: Mapping[str, Any]
    error: str | None = None


def gpu_shape(spec: NexRLJobSpec, applied: Mapping[str, Any] | None) -> NexRLJobSpec:
    """The shape the job's GPUs have: the applied spec (restart-only changes are not applied) with
    the current ``inference.replicas`` (which is live)."""
    if applied is None:
        return spec
    try:
        shape = NexRLJobSpec.model_validate(applied)
    except ValidationError:
        return spec
    return shape.model_copy(update={"inference": shape.inference.model_copy(
        update={"replicas": spec.inference.replicas})})


def admitted_spec(spec: NexRLJobSpec, applied: Mapping[str, Any] | None, gpus: int) -> NexRLJobSpec:
    """The spec the builders get: ``inference.replicas`` lowered so the job holds at most ``gpus``
    (a scale-up waits for its GPUs with the replicas it had)."""
    over = total_gpus(gpu_shape(spec, applied)) - gpus
    inference = spec.inference
    if over <= 0 or inference.replicas == 0:
        return spec
    replicas = max(0, inference.replicas - math.ceil(over / inference.gpus_per_replica))
    return spec.model_copy(update={"inference": inference.model_copy(update={"replicas": replicas})})


def job_view(body: Mapping[str, Any], default_image: str | None = None) -> JobView:
    """Digest a NexRLJob object (``default_image``: the operator's ``--default-image``, see parse_job)."""
    meta, status = body.get("metadata") or {}, dict(body.get("status") or {})
    base = JobView(uid=meta.get("uid", ""), namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                   generation=meta.get("generation") or 1, status=status)
    created = meta.get("creationTimestamp", "")
    try:
        spec = parse_job(body, default_image=default_image).spec
    except JobValidationError:
        held = status.get("admittedGpus")
        if held is None:
            return base
        # An invalid edit leaves the running children alone: the job still holds its GPUs.
        demand = Demand(uid=base.uid, namespace=base.namespace, name=base.name, created=created, gpus=held,
                        admitted=held, running=status.get("phase") == Phase.RUNNING)
        return dataclasses.replace(base, demand=demand)
    applied = spec_changes.applied_spec(meta)
    restart = tuple(spec_changes.pending_restart(meta, spec))
    view = dataclasses.replace(base, spec=spec, applied=applied, restart_fields=restart)
    started = gpu_shape(spec, applied)  # a Kueue queue set after the start needs a restart: not applied
    if is_finished(status) or spec.suspend or started.scheduling.queue_name:
        return view
    admitted = status.get("admittedGpus")
    gpus = total_gpus(started)
    admission = find_condition(status, "Admitted")
    if admitted is None and not admission and status.get("phase") in HELD_PHASES:
        admitted = gpus  # started before quotas existed: it holds what it asks
    waiting = admission.get("lastTransitionTime") if admission.get("status") == "False" else None
    scheduling = spec.scheduling
    demand = Demand(uid=base.uid, namespace=base.namespace, name=base.name, created=created, gpus=gpus,
                    priority=scheduling.queue_priority, node_selector=dict(scheduling.node_selector),
                    admitted=admitted, running=status.get("phase") == Phase.RUNNING)
    return dataclasses.replace(view, demand=demand, waiting_since=waiting or created)


def quota_view(body: Mapping[str, Any]) -> QuotaView:
    """Digest a NexRLQuota object."""
    meta, status = body.get("metadata") or {}, dict(body.get("status") or {})
    name, generation = meta.get("name", ""), meta.get("generation") or 1
    try:
        spec = NexRLQuotaSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        error = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return QuotaView(name, None, generation, status, error)
    return QuotaView(name, Quota(name, meta.get("creationTimestamp", ""), spec), generation, status)


def count(quantity: Any) -> int:
    """A resource quantity as a whole count (GPUs): ``"4"``, ``4``, ``"2k"``; fractions round down."""
    text = str(quantity).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return int(decimal.Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix])
    if text.endswith("m"):
        return int(decimal.Decimal(text[:-1]) / 1000)
    return int(decimal.Decimal(text))


def resource_quota_limits(body: Mapping[str, Any], resources: tuple[str, ...] = (GPU_RESOURCE,)
                          ) -> list[ResourceQuotaLimit]:
    """The ``requests.<resource>`` limits of a ResourceQuota (hard from the spec, used from the status)."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    hard, used = spec.get("hard") or {}, status.get("used") or {}
    out = []
    for resource in resources:
        key = f"requests.{resource}"
        if key in hard:
            out.append(ResourceQuotaLimit(meta.get("namespace", ""), meta.get("name", ""), resource,
                                          count(hard[key]), count(used.get(key, 0))))
    return out


def quota_status(usage: QuotaUsage | None, view: QuotaView) -> dict[str, Any]:
    """The NexRLQuota status for a plan's usage (or for a quota whose spec does not parse)."""
    if usage is None or view.quota is None:
        status = NexRLQuotaStatus(observed_generation=view.generation, message=f"invalid: {view.error}")
    else:
        types = [GpuTypeStatus(name=name, gpus=limit, in_use=used, reserved=reserved)
                 for name, limit, used, reserved in usage.types]
        status = NexRLQuotaStatus(
            observed_generation=view.generation, namespaces=usage.namespaces, gpus_in_use=usage.in_use,
            gpus_reserved=usage.reserved, running_jobs=usage.running, queued_jobs=usage.queued,
            rejected_jobs=usage.rejected, gpu_types=types, message=usage.message)
    return status.model_dump(mode="json", by_alias=True)
