"""Thin kopf glue for NexRLJob: create / update / resume / delete, child indexes and a status timer.

Decisions live elsewhere: ``builders`` (children), ``child_patches`` (ownership, patches),
``spec_changes`` (restart-only changes), ``job_status`` (phase and conditions), ``admission`` via
``memo.admitter`` (GPU quotas: a job that is not admitted gets no children); ``kube`` does the
I/O. ``register`` wires them into a registry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from . import child_patches, job_events, quota_handlers, spec_changes, timestamps
from .admission import Decision, State
from .api import API_VERSION, GROUP, KIND, PLURAL, VERSION, NexRLJob, NexRLJobSpec
from .builders import NO_DEFAULTS, build_children
from .builders.common import JOB_LABEL
from .job_status import (
    QUOTA_EXCEEDED,
    TERMINAL,
    WORKLOAD_ROLES,
    Child,
    Observation,
    announcements,
    desired_status,
    expected_workloads,
    find_condition,
    is_finished,
    should_restart,
    status_patch,
    summarize,
    verdict,
)
from .kube import ApiError, Kube, ensure
from .metrics import counted
from .naming import child_names
from .quota_views import admitted_spec, job_view
from .settings import DEFAULT_STATUS_INTERVAL, RETRY_DELAY, WORKLOADS
from .spec_changes import APPLIED_SPEC
from .spec_checks import JobValidationError, parse_job

logger = logging.getLogger(__name__)

CONFLICT_DELAY = 1.0
"""Seconds before a change handler whose status write met a newer job (409) runs again, on the new one."""
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


async def _claim_found(kube: Kube, namespace: str, spec: NexRLJobSpec) -> bool | None:
    """Whether the PVC of ``spec.storage.existingClaim`` exists (None: the job names none)."""
    claim = spec.storage.existing_claim if spec.storage is not None else None
    if not claim:
        return None
    return await kube.get("v1", "PersistentVolumeClaim", namespace, claim) is not None


async def _write(body: kopf.Body, memo: kopf.Memo, current: Mapping[str, Any], desired: dict[str, Any], *,
                 admission: bool = False) -> bool:
    """Patch only the status keys that changed, on the status this handler read; then announce what
    people should hear (``announcements``: a phase change, a missing PVC, a scale-up) as Events.

    The write carries the body's resourceVersion as a precondition: a handler that read a status
    someone has changed since (a status timer and a resume handler racing after a restart, the
    runtime's progress) gets a 409 and writes nothing: False. So an Event comes only from the one
    write that changed the stored status, and a restarted operator, reading the status its
    predecessor wrote, does not announce it again. With ``admission``, tell admission which
    admission the status now records (``admittedGpus``)."""
    meta = body["metadata"]
    if admission:
        memo.admitter.record(meta["uid"], desired.get("admittedGpus"))
    if not is_finished(desired):  # a job that failed validation (or its quota) is not finished (yet):
        # no completionTime; one it got before (from an older operator) goes when it is repaired
        desired = {**desired, "completionTime": None}
    changes = status_patch(current, desired)
    if changes:
        stub = {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"namespace": meta["namespace"], "name": meta["name"]}}
        precondition = {"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") else {}
        try:
            await memo.kube.patch(stub, {"metadata": precondition, "status": changes}, "status")
        except ApiError as exc:
            if exc.status in (404, 409):  # deleted, or changed since it was read: nothing written
                logger.debug("%s/%s: status not written (%s)", meta["namespace"], meta["name"], exc)
                return False
            raise
    if admission:
        memo.converged_for = desired.get("admittedGpus")
    for type_, reason, message in announcements(current, desired):
        action = job_events.phase_action(desired) if reason == desired["phase"] else None
        await job_events.tell(memo, body, type_, reason, message, action)
    return True


@dataclasses.dataclass(frozen=True)
class Converged:
    """What ``_converge`` saw: the workloads, role -> child name, and children in the way."""

    children: dict[str, Child]
    names: dict[str, str]
    conflicts: list[str]


async def _converge(body: kopf.Body, job: NexRLJob, memo: kopf.Memo, indexes: Mapping[str, Any], *,
                    fresh: bool, restart: list[str]) -> Converged:
    """Ensure every child (Events for each change); free workloads the spec no longer wants.

    The one place that creates children and patches their replicas up; it does nothing for a job whose
    run is over (``_run_over``: its stored status, or the RayJob as the watch shows it now, which may be
    fresher than the caller's body), so no path brings a finished job's pods back."""
    meta, status = body["metadata"], body.get("status") or {}
    observed = _observed(meta["uid"], indexes)
    if _run_over(Observation(meta.get("generation") or 1, status, "", spec=job.spec, children=observed)):
        return Converged(observed, dict(status.get("children") or {}), list(getattr(memo, "conflicts", [])))
    known = [*getattr(memo, "conflicts", []), status.get("message") or ""]
    outcomes = []
    defaults = getattr(memo, "defaults", None) or NO_DEFAULTS
    for child in build_children(job, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"],
                                defaults=defaults):
        try:
            outcome = await ensure(memo.kube, child, owner_uid=meta["uid"], job_name=meta["name"],
                                   config_frozen=bool(restart), fresh=fresh)
        except ApiError as exc:
            label = f"{child['kind']} {child['metadata']['name']}"
            await job_events.tell(memo, body, "Warning", "ApplyFailed", f"{label}: {exc}")
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
        await job_events.announce_child(memo, body, outcome, known)
        outcomes.append(outcome)
    wanted = {(o.desired["kind"], o.desired["metadata"]["name"]) for o in outcomes}
    for child in observed.values():
        if (child.kind, child.name) not in wanted:
            await _scale_to_zero(memo, body, child, "the spec no longer asks for it")
    memo.conflicts = [job_events.conflict(o) for o in outcomes if o.action == "conflict"]
    roles = {name: role for role, name in child_names(meta["name"]).items()}
    seen = {WORKLOAD_ROLES[o.desired["kind"]]: summarize(o.obj) for o in outcomes
            if o.obj is not None and o.desired["kind"] in WORKLOAD_ROLES and o.action != "conflict"}
    names = {roles[o.desired["metadata"]["name"]]: o.desired["metadata"]["name"] for o in outcomes}
    return Converged({**observed, **seen}, names, memo.conflicts)


def _run_over(obs: Observation) -> bool:
    """The job's run has ended for good: its stored status says so, or its observed RayJob succeeded
    or failed with no restart left (what the status would say next, even if nobody wrote it yet)."""
    v = verdict(obs)
    return v.phase in TERMINAL and v.reason not in (QUOTA_EXCEEDED, "ValidationFailed")


async def _scale_to_zero(memo: kopf.Memo, body: kopf.Body, child: Child, why: str) -> None:
    """Free a workload's pods with ``child_patches.scale_to_zero`` (nothing to do for a RayJob, whose
    cluster KubeRay tears down, or for a workload already at 0). The object is read first and patched
    on that resourceVersion, so that of two writers (a resume handler and the status timer) one
    scales it and says so, and the index lagging behind the patch costs one read, not a second Event."""
    if child.kind not in child_patches.SCALED_KINDS or not child.replicas:
        return
    obj = await memo.kube.get("apps/v1", child.kind, body["metadata"]["namespace"], child.name)
    patch = child_patches.scale_to_zero(obj) if obj is not None else {}
    if not patch:
        return
    try:
        await memo.kube.patch(obj, patch)
    except ApiError as exc:
        if exc.status in (404, 409):  # gone, or changed since it was read: the next status tick looks again
            return
        raise
    await job_events.tell(memo, body, "Normal", "ScaledDown", f"scaled {child.kind} {child.name} to 0: {why}")


async def _release(memo: kopf.Memo, body: kopf.Body, children: Mapping[str, Child], phase: str) -> None:
    """A finished job holds no pods: scale every workload that has replicas to 0 (no request when none
    has: the children are read from memory). Kept true on every status tick, not only on the way in."""
    for child in children.values():
        await _scale_to_zero(memo, body, child, f"the job has {phase.lower()}")


async def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, fresh: bool, **kwargs: Any) -> bool:
    """Validate, ensure the children, write the status: the one path of create, update and resume.
    False: the status changed since the body was read, and nothing was written (run again)."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    observed = _observed(meta["uid"], kwargs)
    if is_finished(status):
        if not fresh and kwargs.get("reason") == kopf.Reason.UPDATE:
            await job_events.tell(memo, body, "Normal", "SpecIgnored",
                                  "the job has finished; spec changes are ignored")
        await _release(memo, body, observed, status["phase"])
        return True
    try:
        job = parse_job(body, default_image=_default_image(memo))
    except JobValidationError as exc:
        obs = _observe(meta, status, invalid=str(exc))
        valid = find_condition(status, "Valid")
        if not await _write(body, memo, status, desired_status(obs)):
            return False
        if (valid.get("status"), valid.get("message")) != ("False", str(exc)):  # once per new finding
            await job_events.tell(memo, body, "Warning", "ValidationFailed", str(exc))
        return True
    restart = spec_changes.pending_restart(meta, job.spec)
    claim = await _claim_found(memo.kube, meta["namespace"], job.spec)
    decision, built = _admit(body, job, memo)
    ended = _observe(meta, status, spec=job.spec, children=observed, names=status.get("children") or {},
                     restart_fields=restart, admission=decision, claim_found=claim)
    if _run_over(ended):  # it ended (maybe while no operator ran): free the pods, say so, converge nothing
        desired = desired_status(ended)
        await _release(memo, body, observed, desired["phase"])
        return await _write(body, memo, status, desired, admission=True)
    if decision is not None and decision.state is not State.ADMITTED:  # Queued or rejected: no children
        obs = _observe(meta, status, spec=job.spec, restart_fields=restart, admission=decision,
                       claim_found=claim)
        return await _write(body, memo, status, desired_status(obs), admission=True)
    seen = await _converge(body, built, memo, kwargs, fresh=fresh, restart=restart)
    if not (meta.get("annotations") or {}).get(APPLIED_SPEC):
        applied = json.dumps(spec_changes.spec_dump(job.spec), sort_keys=True, separators=(",", ":"))
        patch.metadata.annotations[APPLIED_SPEC] = applied
    obs = _observe(meta, status, spec=job.spec, children=seen.children, names=seen.names,
                   restart_fields=restart, conflicts=seen.conflicts, admission=decision, claim_found=claim)
    return await _write(body, memo, status, desired_status(obs), admission=True)


def _again() -> kopf.TemporaryError:
    return kopf.TemporaryError("the job changed while it was handled; again on its new state",
                               delay=CONFLICT_DELAY)


async def on_create(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new job: create its children (create-first, one request each) and say Provisioning."""
    if not await _reconcile(body, patch, memo, fresh=True, **kwargs):
        raise _again()


async def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """A spec change or an operator restart: converge the children (get-first, no duplicates)."""
    if not await _reconcile(body, patch, memo, fresh=False, **kwargs):
        raise _again()


async def on_admitted(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, type: str | None, **kwargs: Any
                      ) -> None:
    """Every job event: when ``status.admittedGpus`` is not what the children were converged for, the
    admission loop let a waiting job (or a scale-up) in: converge. (An event handler, not a change
    handler on the field: no diff-base write per job. A failure is retried by the status timer; a
    status write that met a newer job is retried by that job's event.)"""
    status = body.get("status") or {}
    admitted = status.get("admittedGpus")
    if type in (None, "DELETED") or admitted is None or body["metadata"].get("deletionTimestamp"):
        return  # the initial listing is the resume handler's
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return  # a spec change the change handlers converge (or a stale event from before their write)
    if getattr(memo, "converged_for", None) != admitted:
        await _reconcile(body, patch, memo, fresh=not status.get("children"), **kwargs)


async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Holds the finalizer so that deletions are seen; the children go by ownerReference GC."""
    await job_events.tell(memo, body, "Normal", "Deleting",
                "children are deleted by garbage collection (ownerReferences)")


async def refresh_status(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the status true from the watched children: restarts, self-healing, GPU release at the end
    (and after it: a finished job's workloads are kept at 0, whoever scaled them up). A connection
    lost meanwhile (the API server restarting, or this process stopping) waits for the next tick."""
    meta = body["metadata"]
    if memo.kube.closed:
        return  # the operator is stopping (kopf can fire a timer after the cleanup handler)
    try:
        await _refresh(body, memo, **kwargs)
    except aiohttp.ClientError as exc:
        logger.warning("%s/%s: status not refreshed (%s); again at the next tick", meta["namespace"],
                       meta["name"], exc)
    except RuntimeError:  # aiohttp's "Session is closed": the client closed while this tick ran
        if not memo.kube.closed:
            raise
        logger.debug("%s/%s: status not refreshed: the operator is stopping", meta["namespace"], meta["name"])


async def _refresh(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    meta, status = body["metadata"], dict(body.get("status") or {})
    if is_finished(status):
        await _release(memo, body, _observed(meta["uid"], kwargs), status["phase"])
        return
    if status.get("observedGeneration") != meta.get("generation"):
        return  # the change handlers have not seen this generation yet
    try:
        job = parse_job(body, default_image=_default_image(memo))
    except JobValidationError:
        return  # reported by the change handlers
    restart = spec_changes.pending_restart(meta, job.spec)
    decision, built = _admit(body, job, memo)
    if decision is not None and decision.state is not State.ADMITTED:
        return  # a waiting job's status is the admission loop's to write (on every change)
    observed = _observed(meta["uid"], kwargs)
    missing = find_condition(status, "StorageReady").get("status") == "False"  # look again until it exists
    claim = await _claim_found(memo.kube, meta["namespace"], job.spec) if missing else None
    obs = _observe(meta, status, spec=job.spec, children=observed, names=status.get("children") or {},
                   restart_fields=restart, conflicts=getattr(memo, "conflicts", []), admission=decision,
                   claim_found=claim)
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
    if is_finished(desired):
        await _release(memo, body, observed, desired["phase"])
    await _write(body, memo, status, desired, admission=True)  # False (409): the next tick, on the new status


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
