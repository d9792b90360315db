"""Thin kopf glue for NexRLJob: create / update / resume / delete, child indexes and a status timer.

Decisions live elsewhere: ``builders`` (children), ``child_patches`` (ownership, patches),
``spec_changes`` (restart-only changes), ``job_status`` (phase and conditions), ``admission`` via
``memo.admitter`` (GPU quotas: a job that is not admitted gets no children); ``kube`` does the
I/O. ``register`` wires them into a registry.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from . import child_patches, quota_handlers, spec_changes, timestamps
from .admission import Decision, State
from .api import GROUP, PLURAL, VERSION, NexRLJob
from .builders import NO_DEFAULTS, build_children
from .builders.common import JOB_LABEL
from .job_status import (
    TERMINAL,
    WORKLOAD_ROLES,
    Child,
    Observation,
    desired_status,
    expected_workloads,
    is_finished,
    should_restart,
    status_patch,
    summarize,
)
from .kube import ApiError, Kube, Outcome, ensure
from .metrics import counted
from .naming import child_names
from .quota_views import admitted_spec, job_view
from .settings import DEFAULT_STATUS_INTERVAL, RETRY_DELAY, WORKLOADS
from .spec_changes import APPLIED_SPEC
from .spec_checks import JobValidationError, parse_job


@dataclasses.dataclass(frozen=True)
class Options:
    """Operator tunables that shape the handlers."""

    status_interval: float = DEFAULT_STATUS_INTERVAL
    """seconds between status refreshes of a job (its children are watched; the timer only reads memory)"""
    quotas: bool = True
    """watch NexRLQuotas and Namespaces (needs cluster-wide read access to them)"""


def _observe(meta: Mapping[str, Any], status: Mapping[str, Any], **fields: Any) -> Observation:
    """An observation of the job with this metadata and status, taken now."""
    return Observation(meta.get("generation") or 1, status, timestamps.now(), **fields)


def _observed(uid: str, indexes: Mapping[str, Any]) -> dict[str, Child]:
    """role -> workload child of the job with this uid, from the in-memory indexes."""
    found: dict[str, Child] = {}
    for plural in ("rayjobs", "deployments", "statefulsets"):
        for child in indexes.get(plural, {}).get(uid, ()):
            found[child.role] = child
    return found


def _default_image(memo: kopf.Memo) -> str | None:
    """The operator's runtime image for jobs without spec.image (``--default-image``)."""
    return (getattr(memo, "defaults", None) or NO_DEFAULTS).image


def _admit(body: kopf.Body, job: NexRLJob, memo: kopf.Memo) -> tuple[Decision | None, NexRLJob]:
    """The quota decision (None: the job takes no part), and the job its children are built from (a
    scale-up that waits for GPUs keeps the replicas the job holds GPUs for)."""
    view = job_view(body, default_image=_default_image(memo))
    decision = memo.admitter.decide(view)
    if decision is None or decision.state is not State.ADMITTED:
        return decision, job
    spec = admitted_spec(job.spec, view.applied, decision.gpus)
    return decision, job if spec is job.spec else job.model_copy(update={"spec": spec})


def _write(body: kopf.Body, patch: kopf.Patch, current: Mapping[str, Any], desired: dict[str, Any],
           memo: kopf.Memo | None = None) -> None:
    """Patch only the status keys that changed; announce a phase change as an Event. With ``memo``,
    tell admission which admission the status now records (``admittedGpus``)."""
    if memo is not None:
        memo.admitter.record(body["metadata"]["uid"], desired.get("admittedGpus"))
        memo.converged_for = desired.get("admittedGpus")
    changes = status_patch(current, desired)
    for key, value in changes.items():
        patch.status[key] = value
    if "phase" in changes:
        failed = desired["phase"] == "Failed"
        kopf.event(body, type="Warning" if failed else "Normal", reason=desired["phase"],
                   message=desired.get("message") or "")


def _announce(body: kopf.Body, outcome: Outcome, known_conflicts: Sequence[str]) -> None:
    """An Event per change to a child; a conflict only the first time it is seen."""
    label = outcome.label
    messages = {
        "created": ("Normal", "Created", f"created {label}"),
        "adopted": ("Normal", "Adopted", f"adopted {label} (it had no controller)"),
        "updated": ("Normal", "Updated", f"patched {label}: {child_patches.describe_patch(outcome.patch)}"),
        "conflict": ("Warning", "NameConflict", _conflict(outcome)),
    }
    repeated = outcome.action == "conflict" and _conflict(outcome) in known_conflicts
    if outcome.action in messages and not repeated:
        type_, reason, message = messages[outcome.action]
        kopf.event(body, type=type_, reason=reason, message=message)


def _conflict(outcome: Outcome) -> str:
    return f"{outcome.label} exists and is not ours; delete or rename it"


@dataclasses.dataclass(frozen=True)
class Converged:
    """What ``_converge`` saw: the workloads, role -> child name, and children in the way."""

    children: dict[str, Child]
    names: dict[str, str]
    conflicts: list[str]


async def _converge(body: kopf.Body, job: NexRLJob, memo: kopf.Memo, indexes: Mapping[str, Any], *,
                    fresh: bool, restart: list[str]) -> Converged:
    """Ensure every child (Events for each change); free workloads the spec no longer wants."""
    meta = body["metadata"]
    observed = _observed(meta["uid"], indexes)
    known = getattr(memo, "conflicts", [])
    outcomes = []
    defaults = getattr(memo, "defaults", None) or NO_DEFAULTS
    for child in build_children(job, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"],
                                defaults=defaults):
        try:
            outcome = await ensure(memo.kube, child, owner_uid=meta["uid"], job_name=meta["name"],
                                   config_frozen=bool(restart), fresh=fresh)
        except ApiError as exc:
            label = f"{child['kind']} {child['metadata']['name']}"
            kopf.warn(body, reason="ApplyFailed", message=f"{label}: {exc}")
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
        _announce(body, outcome, known)
        outcomes.append(outcome)
    wanted = {(o.desired["kind"], o.desired["metadata"]["name"]) for o in outcomes}
    for child in observed.values():
        if (child.kind, child.name) not in wanted:
            await _scale_to_zero(memo.kube, body, child, "the spec no longer asks for it")
    memo.conflicts = [_conflict(o) for o in outcomes if o.action == "conflict"]
    roles = {name: role for role, name in child_names(meta["name"]).items()}
    seen = {WORKLOAD_ROLES[o.desired["kind"]]: summarize(o.obj) for o in outcomes
            if o.obj is not None and o.desired["kind"] in WORKLOAD_ROLES and o.action != "conflict"}
    names = {roles[o.desired["metadata"]["name"]]: o.desired["metadata"]["name"] for o in outcomes}
    return Converged({**observed, **seen}, names, memo.conflicts)


async def _scale_to_zero(kube: Kube, body: kopf.Body, child: Child, why: str) -> None:
    """Free a workload's pods with ``child_patches.scale_to_zero`` (nothing to do for a RayJob, whose
    cluster KubeRay tears down, or for a workload already at 0)."""
    obj = {"apiVersion": "apps/v1", "kind": child.kind, "spec": {"replicas": child.replicas},
           "metadata": {"namespace": body["metadata"]["namespace"], "name": child.name}}
    patch = child_patches.scale_to_zero(obj)
    if not patch:
        return
    await kube.patch(obj, patch)
    kopf.info(body, reason="ScaledDown", message=f"scaled {child.kind} {child.name} to 0: {why}")


async def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, fresh: bool, **kwargs: Any) -> None:
    """Validate, ensure the children, write the status: the one path of create, update and resume."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    if is_finished(status):
        if not fresh and kwargs.get("reason") == kopf.Reason.UPDATE:
            kopf.info(body, reason="SpecIgnored", message="the job has finished; spec changes are ignored")
        return
    try:
        job = parse_job(body, default_image=_default_image(memo))
    except JobValidationError as exc:
        kopf.warn(body, reason="ValidationFailed", message=str(exc))
        obs = _observe(meta, status, invalid=str(exc))
        _write(body, patch, status, desired_status(obs))
        return
    restart = spec_changes.pending_restart(meta, job.spec)
    decision, built = _admit(body, job, memo)
    if decision is not None and decision.state is not State.ADMITTED:  # Queued or rejected: no children
        obs = _observe(meta, status, spec=job.spec, restart_fields=restart, admission=decision)
        _write(body, patch, status, desired_status(obs), memo)
        return
    seen = await _converge(body, built, memo, kwargs, fresh=fresh, restart=restart)
    if not (meta.get("annotations") or {}).get(APPLIED_SPEC):
        applied = json.dumps(spec_changes.spec_dump(job.spec), sort_keys=True, separators=(",", ":"))
        patch.metadata.annotations[APPLIED_SPEC] = applied
    obs = _observe(meta, status, spec=job.spec, children=seen.children, names=seen.names,
                   restart_fields=restart, conflicts=seen.conflicts, admission=decision)
    _write(body, patch, status, desired_status(obs), memo)


async def on_create(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new job: create its children (create-first, one request each) and say Provisioning."""
    await _reconcile(body, patch, memo, fresh=True, **kwargs)


async def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """A spec change or an operator restart: converge the children (get-first, no duplicates)."""
    await _reconcile(body, patch, memo, fresh=False, **kwargs)


async def on_admitted(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, type: str | None, **kwargs: Any
                      ) -> None:
    """Every job event: when ``status.admittedGpus`` is not what the children were converged for, the
    admission loop let a waiting job (or a scale-up) in: converge. (An event handler, not a change
    handler on the field: no diff-base write per job. A failure is retried by the status timer.)"""
    status = body.get("status") or {}
    admitted = status.get("admittedGpus")
    if type in (None, "DELETED") or admitted is None or body["metadata"].get("deletionTimestamp"):
        return  # the initial listing is the resume handler's
    if getattr(memo, "converged_for", None) != admitted:
        await _reconcile(body, patch, memo, fresh=not status.get("children"), **kwargs)


async def on_delete(body: kopf.Body, **_: Any) -> None:
    """Holds the finalizer so that deletions are seen; the children go by ownerReference GC."""
    kopf.info(body, reason="Deleting", message="children are deleted by garbage collection (ownerReferences)")


async def refresh_status(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the status true from the watched children: restarts, self-healing, GPU release at the end."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    if is_finished(status) or status.get("observedGeneration") != meta.get("generation"):
        return  # finished, or the change handlers have not seen this generation yet
    try:
        job = parse_job(body, default_image=_default_image(memo))
    except JobValidationError:
        return  # reported by the change handlers
    restart = spec_changes.pending_restart(meta, job.spec)
    decision, built = _admit(body, job, memo)
    if decision is not None and decision.state is not State.ADMITTED:
        return  # a waiting job's status is the admission loop's to write (on every change)
    observed = _observed(meta["uid"], kwargs)
    obs = _observe(meta, status, spec=job.spec, children=observed, names=status.get("children") or {},
                   restart_fields=restart, conflicts=getattr(memo, "conflicts", []), admission=decision)
    rayjob = observed.get("rayjob")
    if rayjob is not None and should_restart(obs) and getattr(memo, "restarted", None) != rayjob.uid:
        stub = {"apiVersion": "ray.io/v1", "kind": "RayJob",
                "metadata": {"namespace": meta["namespace"], "name": rayjob.name}}
        await memo.kube.delete(stub, uid=rayjob.uid)
        memo.restarted = rayjob.uid  # the index may show it a little longer: never restart it twice
        others = {role: child for role, child in observed.items() if role != "rayjob"}
        obs = dataclasses.replace(obs, restarted=True, children=others)
    elif not job.spec.suspend and (obs.conflicts or set(expected_workloads(job.spec)) - set(observed)
                                   or (decision is not None and decision.new)):
        # self-healing: a workload went missing, or a child name was taken (retried until it is free);
        # or admission let the job (or its scale-up) in just now
        seen = await _converge(body, built, memo, kwargs, fresh=False, restart=restart)
        obs = dataclasses.replace(obs, children=seen.children, conflicts=seen.conflicts)
    desired = desired_status(obs)
    if desired["phase"] in TERMINAL and status.get("phase") not in TERMINAL:
        for child in observed.values():
            await _scale_to_zero(memo.kube, body, child, f"the job has {desired['phase'].lower()}")
    _write(body, patch, status, desired, memo)


def index_workload(body: kopf.Body, **_: Any) -> dict[str, Child] | None:
    """Index a job's workload children by their controller's uid, as small summaries."""
    owners = [ref for ref in body["metadata"].get("ownerReferences") or [] if ref.get("controller")]
    if not owners or owners[0].get("kind") != "NexRLJob":
        return None
    return {owners[0]["uid"]: summarize(body)}


async def on_startup(memo: kopf.Memo, **_: Any) -> None:
    memo.kube = await Kube.connect()


async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    """Attach every handler to ``registry`` (activities run in this order: admission starts after the
    client exists and stops before it closes)."""
    job = (GROUP, VERSION, PLURAL)
    kopf.on.login(registry=registry)(kopf.login_via_client)  # in-cluster, else kubeconfig
    kopf.on.startup(registry=registry)(on_startup)
    quota_handlers.register(registry, options.status_interval, quotas=options.quotas)
    kopf.on.cleanup(registry=registry)(on_cleanup)
    for group, version, plural in WORKLOADS:
        kopf.index(group, version, plural, id=plural, registry=registry,
                   labels={JOB_LABEL: kopf.PRESENT})(index_workload)
    kopf.on.create(*job, id="create", registry=registry)(counted("create")(on_create))
    kopf.on.update(*job, id="update", field="spec", registry=registry)(counted("update")(on_change))
    kopf.on.event(*job, id="admitted", registry=registry)(counted("admitted")(on_admitted))
    kopf.on.resume(*job, id="resume", registry=registry)(counted("resume")(on_change))
    kopf.on.delete(*job, id="delete", registry=registry)(on_delete)
    kopf.timer(*job, id="status", interval=options.status_interval,
               registry=registry)(counted("status")(refresh_status))
