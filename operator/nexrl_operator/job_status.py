"""Pure status logic: observed children -> phase, conditions (metav1.Condition) and the patch to write.

The operator owns every status key except ``step``, ``reward`` and ``policyVersion``, which the
runtime writes (see docs/operator-runtime.md). Nothing here does I/O or reads a clock: the
caller passes ``now``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .admission import Decision, State
from .api import NexRLJobSpec, Phase, total_gpus
from .builders.common import QUEUE_LABEL
from .child_patches import kueue_managed

TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})
RELEASED = TERMINAL | {Phase.SUSPENDED}
"""Phases in which a job holds no GPUs (its admission is given back)."""
HOLDING = frozenset({Phase.PROVISIONING, Phase.RUNNING})
"""Phases in which a job's children hold GPUs (``heldGpus``)."""
QUOTA_EXCEEDED = "QuotaExceeded"
DEGRADED = "Degraded"
RAY_FAILED = frozenset({"FAILED", "STOPPED"})
LATCHED_CONDITIONS = (("Suspended", Phase.SUSPENDED), ("Complete", Phase.SUCCEEDED), ("Failed", Phase.FAILED))
WORKLOAD_ROLES = {"RayJob": "rayjob", "Deployment": "inference", "StatefulSet": "trainer"}
ANNOUNCED_CONDITIONS = (("StorageReady", "False", "Warning"), ("ScalingUp", "True", "Normal"))
"""(type, status, Event type): a condition that turns to this status is announced once as an Event"""


@dataclasses.dataclass(frozen=True)
class Child:
    """What the status needs of one workload child (RayJob, inference Deployment, trainer StatefulSet)."""

    kind: str
    name: str
    uid: str = ""
    deleting: bool = False
    replicas: int = 0
    ready: int = 0
    suspend: bool = False
    kueue: bool = False
    queue: str = ""
    """Kueue's LocalQueue (the queue-name label)"""
    job_status: str = ""
    deployment_status: str = ""
    message: str = ""

    @property
    def role(self) -> str:
        return WORKLOAD_ROLES[self.kind]

    @property
    def available(self) -> bool:
        return not self.deleting and self.ready >= self.replicas

    @property
    def failed(self) -> bool:
        return self.job_status in RAY_FAILED or self.deployment_status == "Failed"

    @property
    def running(self) -> bool:
        return self.job_status == "RUNNING" and self.deployment_status == "Running"

    @property
    def succeeded(self) -> bool:
        return self.job_status == "SUCCEEDED"


def summarize(obj: Mapping[str, Any]) -> Child:
    """The status-relevant digest of a child object (what the operator keeps in memory)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    return Child(
        kind=obj.get("kind", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        deleting=bool(meta.get("deletionTimestamp")),
        replicas=int(spec.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        suspend=bool(spec.get("suspend")),
        kueue=kueue_managed(obj),
        queue=(meta.get("labels") or {}).get(QUEUE_LABEL, ""),
        job_status=status.get("jobStatus") or "",
        deployment_status=status.get("jobDeploymentStatus") or "",
        message=status.get("message") or "",
    )


@dataclasses.dataclass(frozen=True)
class Observation:
    """Everything the status is computed from: the job, its observed children and the verdicts."""

    generation: int
    status: Mapping[str, Any]
    now: str
    spec: NexRLJobSpec | None = None
    children: Mapping[str, Child] = dataclasses.field(default_factory=dict)
    """role (rayjob, inference, trainer) -> the observed workload"""
    names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """role -> name of every child the job has"""
    invalid: str | None = None
    """the validation message when the spec is invalid"""
    restart_fields: Sequence[str] = ()
    """spec fields changed since the start that only a restart could apply (rejected)"""
    conflicts: Sequence[str] = ()
    """children that exist but belong to someone else"""
    restarted: bool = False
    """the operator just deleted a failed RayJob to run it again"""
    admission: Decision | None = None
    """the NexRLQuota decision; None when the job takes no part (suspended, Kueue's, finished)"""
    claim_found: bool | None = None
    """whether the PVC of ``spec.storage.existingClaim`` exists; None: not looked up (the last answer
    stands)"""


@dataclasses.dataclass(frozen=True)
class Verdict:
    phase: Phase
    reason: str
    message: str


def is_finished(status: Mapping[str, Any]) -> bool:
    """Succeeded or Failed for good. Not: a job that failed validation (a new spec may fix it) or
    was rejected by its quota (a higher limit or a smaller spec may let it in)."""
    if status.get("phase") not in TERMINAL:
        return False
    if status.get("configError"):  # the runtime refused the recipe: a spec edit cannot rerun it
        return True
    valid = find_condition(status, "Valid")
    admitted = find_condition(status, "Admitted")
    return valid.get("status") != "False" and admitted.get("reason") != QUOTA_EXCEEDED


def find_condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    """The condition of this type in a status ({} when it has none)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def expected_workloads(spec: NexRLJobSpec) -> list[str]:
    """The workload roles a valid spec has while it runs."""
    roles = ["rayjob"]
    if spec.inference.replicas:
        roles.append("inference")
    if spec.mode == "training-service":
        roles.append("trainer")
    return roles


def should_restart(obs: Observation) -> bool:
    """A failed run with restarts left (and the job not finished or suspended) is run again."""
    rayjob = obs.children.get("rayjob")
    if obs.spec is None or rayjob is None or rayjob.deleting or not rayjob.failed:
        return False
    if obs.status.get("configError"):  # the same config would be refused again
        return False
    if is_finished(obs.status) or obs.spec.suspend:
        return False
    return int(obs.status.get("restarts") or 0) < obs.spec.max_restarts


def _waiting_for(obs: Observation, spec: NexRLJobSpec) -> list[str]:
    waits = []
    for role in expected_workloads(spec):
        child = obs.children.get(role)
        if child is None or child.deleting:
            waits.append(f"{role} to be created")
        elif role == "rayjob" and not child.running:
            state = "/".join(s for s in (child.deployment_status, child.job_status) if s) or "new"
            waits.append(f"RayJob {child.name} to run ({state})")
        elif role != "rayjob" and not child.available:
            waits.append(f"{role} {child.ready}/{child.replicas} ready")
    claim = missing_claim(obs)
    if waits and claim:  # what keeps the pods Pending
        waits.insert(0, f"PersistentVolumeClaim {claim} to exist")
    return waits


def missing_claim(obs: Observation) -> str | None:
    """The name of ``spec.storage.existingClaim`` when it was not found (now, or at the last look)."""
    storage = obs.spec.storage if obs.spec is not None else None
    claim = storage.existing_claim if storage is not None else None
    if not claim or obs.claim_found:
        return None
    if obs.claim_found is False:
        return claim
    old = find_condition(obs.status, "StorageReady")
    named = f"PersistentVolumeClaim {claim} " in (old.get("message") or "")
    return claim if old.get("status") == "False" and named else None


def scaling_up(obs: Observation) -> str | None:
    """``inference A -> B replicas, R ready`` while a Running job's inference scales up (its RayJob
    and trainer still running), else None. A is ``status.inferenceReplicas``: what it ran with."""
    base = obs.status.get("inferenceReplicas")
    child = obs.children.get("inference")
    if obs.spec is None or obs.status.get("phase") != Phase.RUNNING or base is None or child is None:
        return None
    if child.deleting or child.replicas <= base or child.available:
        return None
    waits = _waiting_for(obs, obs.spec)
    others = [w for w in waits if not w.startswith(("inference ", "PersistentVolumeClaim "))]
    return None if others else f"inference {base} -> {child.replicas} replicas, {child.ready} ready"


def degraded(obs: Observation) -> str | None:
    """``inference 1/2 ready`` while a Running job's RayJob still runs and its workloads exist but some
    of their pods are not ready (a replica restarting): the run goes on, so the job stays Running."""
    if obs.spec is None or obs.status.get("phase") != Phase.RUNNING or missing_claim(obs):
        return None
    short = []
    for role in expected_workloads(obs.spec):
        child = obs.children.get(role)
        if child is None or child.deleting or (role == "rayjob" and not child.running):
            return None
        if role != "rayjob" and not child.available:
            short.append(f"{role} {child.ready}/{child.replicas} ready")
    return ", ".join(short) or None


def verdict(obs: Observation) -> Verdict:
    """The phase, with a CamelCase reason and a message that says what happens or what is awaited."""
    if obs.invalid is not None or obs.spec is None:
        return Verdict(Phase.FAILED, "ValidationFailed", obs.invalid or "the spec is invalid")
    if is_finished(obs.status):
        phase = Phase(obs.status["phase"])
        old = find_condition(obs.status, "Complete" if phase == Phase.SUCCEEDED else "Failed")
        return Verdict(phase, old.get("reason") or "Finished", obs.status.get("message") or "finished")
    spec, rayjob = obs.spec, obs.children.get("rayjob")
    if obs.restarted:
        restart = f"restart {int(obs.status.get('restarts') or 0) + 1} of {spec.max_restarts}"
        message = (f"the run failed; {restart}: a new RayJob runs it again, from the latest complete "
                   "checkpoint on the job's storage if the recipe sets resume.mode: auto, else from step 0")
        return Verdict(Phase.PROVISIONING, "Restarting", message)
    if rayjob is not None and rayjob.succeeded:
        return Verdict(Phase.SUCCEEDED, "RayJobSucceeded", f"RayJob {rayjob.name} succeeded")
    if rayjob is not None and rayjob.failed and (error := obs.status.get("configError")):
        return Verdict(Phase.FAILED, "ValidationFailed", f"the runtime refused the config: {error}")
    if rayjob is not None and rayjob.failed and not should_restart(obs):
        detail = f": {rayjob.message}" if rayjob.message else ""
        return Verdict(Phase.FAILED, "RayJobFailed",
                       f"RayJob {rayjob.name} {rayjob.job_status or rayjob.deployment_status}{detail}")
    if spec.suspend:
        return Verdict(Phase.SUSPENDED, "Suspended", "spec.suspend is true: all pods are stopped")
    if obs.admission is not None and obs.admission.state is State.QUEUED:
        return Verdict(Phase.QUEUED, "WaitingForQuota", obs.admission.message)
    if obs.admission is not None and obs.admission.state is State.REJECTED:
        return Verdict(Phase.FAILED, QUOTA_EXCEEDED, obs.admission.message)
    if obs.conflicts:
        return Verdict(Phase.PROVISIONING, "NameConflict", "; ".join(obs.conflicts))
    if rayjob is not None and rayjob.suspend and rayjob.kueue:
        queue = spec.scheduling.queue_name
        return Verdict(Phase.QUEUED, "WaitingForKueue", f"waiting for Kueue to admit the job (queue {queue})")
    waits = _waiting_for(obs, spec)
    if waits and (scale := scaling_up(obs)):
        return Verdict(Phase.RUNNING, "Running", f"running; scaling up: {scale}")
    if waits and (short := degraded(obs)):
        return Verdict(Phase.RUNNING, DEGRADED, f"running with {short}: the run goes on while pods restart")
    if waits:
        return Verdict(Phase.PROVISIONING, "Provisioning", "waiting for " + ", ".join(waits))
    return Verdict(Phase.RUNNING, "Running", "all workloads are running")


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


def conditions(obs: Observation, v: Verdict) -> list[dict[str, Any]]:
    """metav1.Conditions without times and generations (see ``desired_status``).

    Valid, SpecApplied and Ready are always present; Suspended, Complete and Failed once they
    have been true (as the Job controller does), so that their transitions stay visible.
    """
    refused = obs.status.get("configError")
    valid = obs.invalid is None and obs.spec is not None and not refused
    why = obs.invalid or (f"the runtime refused the config: {refused}" if refused else None)
    reason = "SpecValid" if valid else "ValidationFailed"
    out = [_condition("Valid", valid, reason, why or "the spec is valid")]
    if valid:
        out.append(_spec_applied(obs))
    if (admitted := _admitted(obs, v)) is not None:
        out.append(admitted)
    if valid and (storage := _storage_ready(obs)) is not None:
        out.append(storage)
    out.append(_condition("Ready", v.phase == Phase.RUNNING and v.reason != DEGRADED, v.reason, v.message))
    if (scaling := _scaling_up_condition(obs, v)) is not None:
        out.append(scaling)
    seen = {c.get("type") for c in obs.status.get("conditions") or []}
    for type_, phase in LATCHED_CONDITIONS:
        if v.phase == phase:
            out.append(_condition(type_, True, v.reason, v.message))
        elif type_ in seen:
            out.append(_condition(type_, False, f"Not{type_}", f"the job is {v.phase.value.lower()}"))
    return out


def _spec_applied(obs: Observation) -> dict[str, Any]:
    fields = ", ".join(obs.restart_fields)
    if fields:
        return _condition("SpecApplied", False, "RestartRequired",
                          f"changes to {fields} need a restart, which the operator does not do by itself: "
                          "revert them, or delete and re-create the job (its run then starts from step 0, "
                          "unless spec.storage.existingClaim keeps its checkpoints and the recipe sets "
                          "resume.mode: auto); live changes "
                          "(inference.replicas, suspend, maxRestarts) still apply")
    if obs.admission is not None and obs.admission.state is not State.ADMITTED:
        return _condition("SpecApplied", False, "WaitingForAdmission",
                          "nothing is created or changed until the job is admitted "
                          "(see the Admitted condition)")
    if obs.admission is not None and obs.admission.pending:
        return _condition("SpecApplied", False, "ScaleUpWaiting",
                          f"{obs.admission.pending} (the job keeps its current replicas meanwhile)")
    return _condition("SpecApplied", True, "Applied", "the children match the spec")


def _admitted(obs: Observation, v: Verdict) -> dict[str, Any] | None:
    """Admitted: whether the job holds GPUs of its quota, or why not; None if it never took part."""
    if obs.invalid is not None:  # an invalid edit changes nothing that runs: the admission stands
        old = find_condition(obs.status, "Admitted")
        return {key: old[key] for key in ("type", "status", "reason", "message")} if old else None
    decision = obs.admission
    if decision is not None and decision.state is State.QUEUED:
        return _condition("Admitted", False, "WaitingForQuota", decision.message)
    if decision is not None and decision.state is State.REJECTED:
        return _condition("Admitted", False, QUOTA_EXCEEDED, decision.message)
    if decision is not None and v.phase not in RELEASED:
        return _condition("Admitted", True, "Admitted", decision.message)
    if decision is None and v.phase not in RELEASED and (queue := kueue_queue(obs)):
        return _kueue_admitted(obs, queue)
    if decision is not None or find_condition(obs.status, "Admitted"):
        message = f"the job is {v.phase.value.lower()}; it holds no GPUs"
        return _condition("Admitted", False, "Released", message)
    return None


def kueue_queue(obs: Observation) -> str | None:
    """Kueue's LocalQueue when Kueue admits the job: its RayJob carries the queue-name label (before
    the RayJob exists: the spec names a queue the job started with)."""
    rayjob = obs.children.get("rayjob")
    if rayjob is not None and not rayjob.deleting:
        if not rayjob.kueue:
            return None
        return rayjob.queue or (obs.spec.scheduling.queue_name if obs.spec is not None else None)
    queue = obs.spec.scheduling.queue_name if obs.spec is not None else None
    return queue if queue and "spec.scheduling.queueName" not in obs.restart_fields else None


def _kueue_admitted(obs: Observation, queue: str) -> dict[str, Any]:
    """Admitted of a Kueue job: True once Kueue lets its RayJob run (unsuspended), else waiting."""
    rayjob = obs.children.get("rayjob")
    decides = f"Kueue's LocalQueue {queue} admits the job (NexRLQuotas do not apply)"
    if rayjob is None or rayjob.deleting:
        return {"type": "Admitted", "status": "Unknown", "reason": "Kueue",
                "message": f"{decides}; its RayJob is not created yet"}
    if rayjob.suspend:
        return _condition("Admitted", False, "Kueue", f"{decides}; waiting: Kueue holds its RayJob suspended")
    return _condition("Admitted", True, "Kueue", f"admitted by Kueue's LocalQueue {queue}: its RayJob runs")


def _storage_ready(obs: Observation) -> dict[str, Any] | None:
    """StorageReady for a job that mounts an existing PVC (``spec.storage.existingClaim``)."""
    storage = obs.spec.storage if obs.spec is not None else None
    claim = storage.existing_claim if storage is not None else None
    if not claim:
        return None
    if missing_claim(obs):
        return _condition("StorageReady", False, "ClaimNotFound",
                          f"PersistentVolumeClaim {claim} (spec.storage.existingClaim) does not exist in the "
                          "job's namespace: its pods stay Pending until it is created")
    if obs.claim_found:
        return _condition("StorageReady", True, "ClaimFound", f"PersistentVolumeClaim {claim} exists")
    old = find_condition(obs.status, "StorageReady")
    return {key: old[key] for key in ("type", "status", "reason", "message")} if old else None


def _scaling_up_condition(obs: Observation, v: Verdict) -> dict[str, Any] | None:
    """ScalingUp: True while a Running job's inference scales up; False (kept) once it has been true."""
    if v.phase == Phase.RUNNING and (scale := scaling_up(obs)):
        return _condition("ScalingUp", True, "ScalingUp", scale)
    if not find_condition(obs.status, "ScalingUp"):
        return None
    child = obs.children.get("inference")
    done = f"inference {child.ready}/{child.replicas} ready" if child is not None else "no scale-up running"
    return _condition("ScalingUp", False, "NotScalingUp", done)


def admitted_gpus(obs: Observation, v: Verdict) -> int | None:
    """What ``status.admittedGpus`` says: the GPUs the job may hold now (None: none)."""
    if obs.invalid is not None:
        return obs.status.get("admittedGpus")
    decision = obs.admission
    if decision is None or decision.state is not State.ADMITTED or v.phase in RELEASED:
        return None
    return decision.gpus


def held_gpus(obs: Observation, v: Verdict) -> int:
    """What ``status.heldGpus`` says: the GPUs the job's children hold now (the admission while the job
    provisions or runs; 0 when it is queued, suspended or finished)."""
    if obs.invalid is not None or obs.spec is None:  # an invalid edit changes nothing that runs
        return int(obs.status.get("heldGpus") or 0)
    if v.phase not in HOLDING:
        return 0
    admitted = admitted_gpus(obs, v)
    return total_gpus(obs.spec) if admitted is None else admitted  # None: Kueue's job, Kueue let it run


def inference_replicas(obs: Observation, v: Verdict) -> int | None:
    """What ``status.inferenceReplicas`` says: the inference replicas a Running job has all ready (kept
    while it scales up: the base of ``scaling_up``); None when it is not Running."""
    if v.phase != Phase.RUNNING or obs.spec is None:
        return None
    if "inference" not in expected_workloads(obs.spec):
        return 0
    child = obs.children.get("inference")
    if child is not None and not child.deleting and child.available:
        return child.replicas
    return obs.status.get("inferenceReplicas")


def announcements(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(Event type, reason, message) of what a status write changes that people should hear about
    once: a new phase, and the conditions of ``ANNOUNCED_CONDITIONS`` turning."""
    out = []
    if "phase" in desired and desired["phase"] != current.get("phase"):
        failed = desired["phase"] == Phase.FAILED
        out.append(("Warning" if failed else "Normal", desired["phase"], desired.get("message") or ""))
    for type_, status, event_type in ANNOUNCED_CONDITIONS:
        new, old = find_condition(desired, type_), find_condition(current, type_)
        if new.get("status") == status and old.get("status") != status:
            out.append((event_type, new["reason"], new["message"]))
    return out


def _stamp(new: list[dict[str, Any]], old: Sequence[Mapping[str, Any]], generation: int,
           now: str) -> list[dict[str, Any]]:
    """Add observedGeneration, and lastTransitionTime kept from ``old`` unless the status flipped."""
    before = {c.get("type"): c for c in old}
    stamped = []
    for cond in new:
        prior = before.get(cond["type"])
        since = prior.get("lastTransitionTime") if prior and prior.get("status") == cond["status"] else None
        stamped.append({**cond, "lastTransitionTime": since or now, "observedGeneration": generation})
    return stamped


def desired_status(obs: Observation) -> dict[str, Any]:
    """The operator-owned part of the status for this observation."""
    v = verdict(obs)
    old = obs.status
    status: dict[str, Any] = {
        "phase": v.phase.value,
        "conditions": _stamp(conditions(obs, v), old.get("conditions") or [], obs.generation, obs.now),
        "observedGeneration": obs.generation,
        "children": dict(obs.names) if obs.names else old.get("children") or {},
        "message": v.message,
        "restarts": int(old.get("restarts") or 0) + (1 if obs.restarted else 0),
    }
    if obs.spec is not None:
        status["gpus"] = total_gpus(obs.spec)
    status["heldGpus"] = held_gpus(obs, v)
    if obs.admission is not None or "admittedGpus" in old:
        status["admittedGpus"] = admitted_gpus(obs, v)
    replicas = inference_replicas(obs, v)
    if replicas is not None or "inferenceReplicas" in old:
        status["inferenceReplicas"] = replicas
    start = old.get("startTime") or (obs.now if v.phase == Phase.RUNNING else None)
    finished = v.phase in TERMINAL and v.reason != QUOTA_EXCEEDED
    end = old.get("completionTime") or (obs.now if finished else None)
    status.update({key: value for key, value in (("startTime", start), ("completionTime", end)) if value})
    return status


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``desired`` that differ from ``current``: empty when nothing needs writing."""
    return {key: value for key, value in desired.items() if current.get(key) != value}
