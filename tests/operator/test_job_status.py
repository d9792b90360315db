"""job_status.py: observed children -> phase, conditions and the (minimal) status patch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nexrl_operator.admission import Decision, State
from nexrl_operator.api import NexRLJobSpec
from nexrl_operator.job_status import (
    Child,
    Observation,
    announcements,
    desired_status,
    is_finished,
    should_restart,
    status_patch,
    summarize,
    verdict,
)

from nexrl_runtime.contract import RUNTIME_KEYS, progress_patch, status_path

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def spec(**fields: Any) -> NexRLJobSpec:
    base = {"recipe": "/r.yaml", "image": "img", "model": {"name": "m"}, "inference": {"replicas": 2}}
    return NexRLJobSpec.model_validate({**base, **fields})


def rayjob(job: str = "", deployment: str = "", **kw: Any) -> Child:
    return Child(kind="RayJob", name="j", uid="r1", job_status=job, deployment_status=deployment, **kw)


def inference(ready: int, replicas: int = 2) -> Child:
    return Child(kind="Deployment", name="j-inference", replicas=replicas, ready=ready)


def observe(status: dict[str, Any] | None = None, now: str = T0, **kw: Any) -> Observation:
    kw.setdefault("spec", spec())
    return Observation(generation=kw.pop("generation", 1), status=status or {}, now=now, **kw)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


RUNNING = {"rayjob": rayjob("RUNNING", "Running"), "inference": inference(2)}


def test_invalid_spec_is_failed_with_validation_failed() -> None:
    status = desired_status(observe(spec=None, invalid="spec.model=None: required"))
    assert (status["phase"], status["message"]) == ("Failed", "spec.model=None: required")
    conds = conditions(status)
    assert (conds["Valid"]["status"], conds["Valid"]["reason"]) == ("False", "ValidationFailed")
    assert conds["Failed"]["reason"] == "ValidationFailed" and "SpecApplied" not in conds
    assert "gpus" not in status
    assert not is_finished(status)  # a corrected spec may still run


def test_new_job_waits_for_its_children() -> None:
    status = desired_status(observe(names={"rayjob": "j"}))
    assert status["phase"] == "Provisioning"
    assert status["message"] == "waiting for rayjob to be created, inference to be created"
    assert status["gpus"] == 2 + 1 and status["children"] == {"rayjob": "j"} and status["restarts"] == 0
    assert set(conditions(status)) == {"Valid", "SpecApplied", "Ready"}


def test_provisioning_names_what_it_waits_for() -> None:
    obs = observe(children={"rayjob": rayjob("PENDING", "Initializing"), "inference": inference(1)})
    assert verdict(obs).message == "waiting for RayJob j to run (Initializing/PENDING), inference 1/2 ready"
    trainer = Child(kind="StatefulSet", name="j-trainer", replicas=1, ready=0)
    obs = observe(spec=spec(mode="training-service"), children={**RUNNING, "trainer": trainer})
    assert verdict(obs).message == "waiting for trainer 0/1 ready"


def test_running_when_the_rayjob_runs_and_every_workload_is_ready() -> None:
    status = desired_status(observe(children=RUNNING, now=T1))
    assert (status["phase"], status["startTime"]) == ("Running", T1)
    assert conditions(status)["Ready"]["status"] == "True"
    assert "completionTime" not in status


def test_succeeded_and_failed_are_terminal() -> None:
    done = desired_status(observe(children={**RUNNING, "rayjob": rayjob("SUCCEEDED", "Complete")}, now=T1))
    assert (done["phase"], done["completionTime"]) == ("Succeeded", T1)
    assert conditions(done)["Complete"]["reason"] == "RayJobSucceeded"
    assert is_finished(done)
    later = observe(status=done, now="2026-02-01T00:00:00Z", children={"rayjob": rayjob("FAILED", "Failed")})
    again = desired_status(later)
    assert again["phase"] == "Succeeded" and status_patch(done, again) == {}


def test_failed_rayjob_restarts_while_restarts_remain() -> None:
    failed = {"rayjob": rayjob("FAILED", "Failed", message="OOM"), "inference": inference(2)}
    obs = observe(spec=spec(maxRestarts=1), children=failed)
    assert should_restart(obs)
    restarting = desired_status(dataclasses.replace(obs, restarted=True))
    assert (restarting["phase"], restarting["restarts"]) == ("Provisioning", 1)
    assert conditions(restarting)["Ready"]["reason"] == "Restarting"
    assert restarting["message"] == ("the run failed; restart 1 of 1: a new RayJob runs it again, from the "
                                     "latest complete checkpoint on the job's storage if the recipe sets "
                                     "resume.mode: auto, else from step 0")
    exhausted = observe(status=restarting, spec=spec(maxRestarts=1), children=failed)
    assert not should_restart(exhausted)
    final = desired_status(exhausted)
    assert (final["phase"], final["message"]) == ("Failed", "RayJob j FAILED: OOM")
    assert conditions(final)["Failed"]["reason"] == "RayJobFailed"


def test_no_restart_when_suspended_deleting_or_out_of_budget() -> None:
    failed = rayjob("FAILED", "Failed")
    assert not should_restart(observe(spec=spec(maxRestarts=0), children={"rayjob": failed}))
    assert not should_restart(observe(spec=spec(maxRestarts=2, suspend=True), children={"rayjob": failed}))
    gone = dataclasses.replace(failed, deleting=True)
    assert not should_restart(observe(spec=spec(maxRestarts=2), children={"rayjob": gone}))


def test_suspend_then_resume_keeps_the_suspended_condition_visible() -> None:
    suspended = desired_status(observe(spec=spec(suspend=True), children=RUNNING))
    assert suspended["phase"] == "Suspended" and conditions(suspended)["Suspended"]["status"] == "True"
    resumed = desired_status(observe(status=suspended, children={"rayjob": rayjob()}, now=T1))
    assert resumed["phase"] == "Provisioning"
    flag = conditions(resumed)["Suspended"]
    assert (flag["status"], flag["lastTransitionTime"]) == ("False", T1)


def test_kueue_suspended_rayjob_is_queued() -> None:
    held = rayjob(suspend=True, kueue=True)
    obs = observe(spec=spec(scheduling={"queueName": "team-a"}), children={"rayjob": held})
    v = verdict(obs)
    assert (v.phase, v.reason) == ("Queued", "WaitingForKueue") and "team-a" in v.message


def test_conflicts_and_rejected_restarts_are_reported() -> None:
    conflicted = verdict(observe(conflicts=["Service j-inference exists and is not ours"]))
    assert (conflicted.phase, conflicted.reason) == ("Provisioning", "NameConflict")
    status = desired_status(observe(children=RUNNING, restart_fields=["spec.model.name", "spec.image"]))
    applied = conditions(status)["SpecApplied"]
    assert (applied["status"], applied["reason"]) == ("False", "RestartRequired")
    assert "spec.model.name, spec.image" in applied["message"] and status["phase"] == "Running"
    assert "starts from step 0, unless spec.storage.existingClaim keeps its checkpoints" in applied["message"]


def test_conditions_keep_transition_times_and_carry_the_generation() -> None:
    first = desired_status(observe(children={"rayjob": rayjob()}, now=T0))
    second = desired_status(observe(status=first, children=RUNNING, now=T1, generation=2))
    valid, ready = conditions(second)["Valid"], conditions(second)["Ready"]
    assert (valid["lastTransitionTime"], valid["observedGeneration"]) == (T0, 2)
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", T1)
    assert second["observedGeneration"] == 2


def test_status_is_written_only_when_it_changes() -> None:
    obs = observe(children={"rayjob": rayjob()}, names={"rayjob": "j"})
    current = {**desired_status(obs), "step": 7, "reward": 0.5}  # the runtime's keys stay untouched
    later = dataclasses.replace(obs, status=current, now=T1)
    assert status_patch(current, desired_status(later)) == {}
    patch = status_patch(current, desired_status(dataclasses.replace(later, children=RUNNING)))
    assert set(patch) == {"phase", "conditions", "message", "startTime", "inferenceReplicas"}


@pytest.mark.parametrize(("obj", "expected"), [
    ({"kind": "RayJob", "metadata": {"name": "j", "uid": "u", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
      "spec": {"suspend": True}, "status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}},
     Child("RayJob", "j", "u", suspend=True, kueue=True, queue="q", job_status="RUNNING",
           deployment_status="Running")),
    ({"kind": "Deployment", "metadata": {"name": "d", "deletionTimestamp": T0}, "spec": {"replicas": 3},
      "status": {"readyReplicas": 1}}, Child("Deployment", "d", deleting=True, replicas=3, ready=1)),
    ({"kind": "StatefulSet", "metadata": {"name": "s"}}, Child("StatefulSet", "s")),
])
def test_summarize(obj: dict[str, Any], expected: Child) -> None:
    assert summarize(obj) == expected


def test_the_operator_never_writes_the_runtime_keys() -> None:
    everything = desired_status(observe(children=RUNNING, restarted=True, names={"rayjob": "j"}))
    assert not set(everything) & set(RUNTIME_KEYS)


def test_progress_patch() -> None:
    assert progress_patch(3, 0.1234567, 2) == {"status": {"step": 3, "reward": 0.123457, "policyVersion": 2}}
    assert progress_patch(4, float("nan")) == {"status": {"step": 4}}
    assert status_path("ns", "j") == "/apis/nexrl.io/v1alpha1/namespaces/ns/nexrljobs/j/status"


QUEUED = Decision(State.QUEUED, 3, "needs 3 nvidia.com/gpu, quota q has 1 of 4 free")
ADMITTED = Decision(State.ADMITTED, 3, "admitted by quota q")


@pytest.mark.parametrize("decision", [QUEUED, Decision(State.REJECTED, 3, "needs 3, quota q has 2")])
def test_a_job_waiting_for_admission_does_not_claim_its_spec_is_applied(decision: Decision) -> None:
    status = desired_status(observe(admission=decision))  # no children: nothing is created yet
    applied = conditions(status)["SpecApplied"]
    assert (applied["status"], applied["reason"]) == ("False", "WaitingForAdmission")
    assert "children match" not in applied["message"] and "admitted" in applied["message"]
    admitted = desired_status(observe(admission=ADMITTED, children=RUNNING))
    assert conditions(admitted)["SpecApplied"]["reason"] == "Applied"


def test_held_gpus_are_what_the_job_holds_and_gpus_what_it_requests() -> None:
    def gpus(**kw: Any) -> tuple[int, int]:
        status = desired_status(observe(**kw))
        return status["gpus"], status["heldGpus"]

    assert gpus(admission=QUEUED) == (3, 0)
    assert gpus(admission=ADMITTED, children={"rayjob": rayjob()}) == (3, 3)  # provisioning holds them
    assert gpus(admission=ADMITTED, children=RUNNING) == (3, 3)
    waiting = Decision(State.ADMITTED, 3, "admitted", pending="the scale-up waits")  # asks 5, holds 3
    assert gpus(spec=spec(inference={"replicas": 4}), admission=waiting, children=RUNNING) == (5, 3)
    done = {**RUNNING, "rayjob": rayjob("SUCCEEDED", "Complete")}
    assert gpus(admission=ADMITTED, children=done) == (3, 0)
    failed = {**RUNNING, "rayjob": rayjob("FAILED", "Failed")}
    assert gpus(admission=ADMITTED, children=failed) == (3, 0)
    assert gpus(spec=spec(suspend=True), children=RUNNING) == (3, 0)
    kueue = spec(scheduling={"queueName": "team-a"})
    let_in = {**RUNNING, "rayjob": rayjob("RUNNING", "Running", kueue=True)}
    assert gpus(spec=kueue, children=let_in) == (3, 3)
    assert gpus(spec=kueue, children={"rayjob": rayjob(suspend=True, kueue=True)}) == (3, 0)  # Kueue holds it
    # an invalid edit changes nothing that runs: the job keeps what it held
    held = desired_status(observe(admission=ADMITTED, children=RUNNING))
    invalid = desired_status(observe(status=held, spec=None, invalid="spec.image: required"))
    assert invalid["heldGpus"] == 3 and "gpus" not in invalid


def scaled(ready: int, replicas: int = 3) -> dict[str, Child]:
    return {**RUNNING, "inference": inference(ready, replicas)}


def test_scaling_up_a_running_job_keeps_it_running_with_a_scaling_up_condition() -> None:
    running = desired_status(observe(children=RUNNING))
    assert (running["phase"], running["inferenceReplicas"]) == ("Running", 2)
    assert "ScalingUp" not in conditions(running)
    three = spec(inference={"replicas": 3})
    up = desired_status(observe(status=running, spec=three, children=scaled(2), now=T1))
    assert (up["phase"], up["inferenceReplicas"]) == ("Running", 2)
    scaling = conditions(up)["ScalingUp"]
    assert (scaling["status"], scaling["message"]) == ("True", "inference 2 -> 3 replicas, 2 ready")
    assert conditions(up)["Ready"]["status"] == "True" and "2 -> 3" in up["message"]
    assert announcements(running, up) == [("Normal", "ScalingUp", "inference 2 -> 3 replicas, 2 ready")]
    later = desired_status(observe(status=up, spec=three, children=scaled(1), now=T1))
    assert conditions(later)["ScalingUp"]["message"] == "inference 2 -> 3 replicas, 1 ready"
    assert announcements(up, later) == []  # announced once
    done = desired_status(observe(status=later, spec=three, children=scaled(3)))
    assert (done["phase"], done["inferenceReplicas"]) == ("Running", 3)
    assert (conditions(done)["ScalingUp"]["status"], conditions(done)["ScalingUp"]["reason"]) == (
        "False", "NotScalingUp")


def test_a_running_job_that_loses_a_replica_stays_running_degraded() -> None:
    running = desired_status(observe(children=RUNNING))
    lost = desired_status(observe(status=running, children=scaled(1, replicas=2), now=T1))
    assert (lost["phase"], lost["inferenceReplicas"]) == ("Running", 2)  # the base is kept
    ready = conditions(lost)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Degraded")
    assert lost["message"] == "running with inference 1/2 ready: the run goes on while pods restart"
    assert announcements(running, lost) == []  # the phase did not change
    back = desired_status(observe(status=lost, children=RUNNING))
    assert (back["phase"], back["message"]) == ("Running", "all workloads are running")
    assert conditions(back)["Ready"]["status"] == "True"
    # a replica lost while the RayJob does not run (a restart, say): Provisioning, as for a new job
    stopped = {**scaled(1, replicas=2), "rayjob": rayjob("PENDING", "Initializing")}
    assert desired_status(observe(status=running, children=stopped))["phase"] == "Provisioning"


def test_only_a_scale_up_or_a_lost_pod_of_a_running_job_is_not_provisioning() -> None:
    # a provisioning job, or the RayJob not running: Provisioning
    fresh = desired_status(observe(spec=spec(inference={"replicas": 3}), children=scaled(2)))
    assert fresh["phase"] == "Provisioning" and "ScalingUp" not in conditions(fresh)
    running = desired_status(observe(children=RUNNING))
    stalled = {**scaled(2), "rayjob": rayjob("PENDING", "Initializing")}
    assert desired_status(observe(status=running, spec=spec(inference={"replicas": 3}),
                                  children=stalled))["phase"] == "Provisioning"


def test_kueue_job_says_kueue_admits_it() -> None:
    kueue = spec(scheduling={"queueName": "team-a"})
    before = desired_status(observe(spec=kueue))  # the RayJob is not created yet
    assert conditions(before)["Admitted"] == {**conditions(before)["Admitted"], "status": "Unknown",
                                               "reason": "Kueue"}
    assert "Kueue's LocalQueue team-a admits the job" in conditions(before)["Admitted"]["message"]
    held = rayjob(suspend=True, kueue=True, queue="team-a")
    waiting = desired_status(observe(status=before, spec=kueue, children={"rayjob": held}))
    admitted = conditions(waiting)["Admitted"]
    assert (waiting["phase"], admitted["status"], admitted["reason"]) == ("Queued", "False", "Kueue")
    assert "team-a" in admitted["message"] and "suspended" in admitted["message"]
    running = {**RUNNING, "rayjob": rayjob("RUNNING", "Running", kueue=True, queue="team-a")}
    let_in = desired_status(observe(status=waiting, spec=kueue, children=running))
    admitted = conditions(let_in)["Admitted"]
    assert (let_in["phase"], admitted["status"], admitted["reason"]) == ("Running", "True", "Kueue")
    done = {**running, "rayjob": rayjob("SUCCEEDED", "Complete", kueue=True, queue="team-a")}
    released = conditions(desired_status(observe(status=let_in, spec=kueue, children=done)))["Admitted"]
    assert (released["status"], released["reason"]) == ("False", "Released")
    # a queue set after the start needs a restart: the job is not Kueue's
    unqueued = observe(spec=kueue, restart_fields=["spec.scheduling.queueName"], children=RUNNING)
    assert "Admitted" not in conditions(desired_status(unqueued))


def test_a_missing_existing_claim_is_reported_until_it_exists() -> None:
    claimed = spec(storage={"existingClaim": "shared-data"})
    pending = {"rayjob": rayjob("PENDING", "Initializing"), "inference": inference(0)}
    missing = desired_status(observe(spec=claimed, children=pending, claim_found=False))
    storage = conditions(missing)["StorageReady"]
    assert (storage["status"], storage["reason"]) == ("False", "ClaimNotFound")
    assert "PersistentVolumeClaim shared-data" in storage["message"] and "existingClaim" in storage["message"]
    assert missing["message"].startswith("waiting for PersistentVolumeClaim shared-data to exist, ")
    assert ("Warning", "ClaimNotFound", storage["message"]) in announcements({}, missing)
    # not looked up this time (the admission loop, the timer): the last answer stands, announced once
    again = desired_status(observe(status=missing, spec=claimed, children=pending, now=T1))
    assert conditions(again)["StorageReady"]["reason"] == "ClaimNotFound"
    assert announcements(missing, again) == []
    found = desired_status(observe(status=again, spec=claimed, children=pending, claim_found=True, now=T1))
    assert conditions(found)["StorageReady"]["status"] == "True"
    assert "PersistentVolumeClaim" not in found["message"]
    kept = desired_status(observe(status=found, spec=claimed, children=pending))
    assert conditions(kept)["StorageReady"]["status"] == "True"
    # no existing claim: no condition
    assert "StorageReady" not in conditions(desired_status(observe(spec=spec(storage={"size": "1Gi"}))))
