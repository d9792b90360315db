"""job_status.py: observed children -> phase, conditions and the (minimal) status patch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nexrl_operator.api import NexRLJobSpec
from nexrl_operator.job_status import (
    Child,
    Observation,
    desired_status,
    is_finished,
    should_restart,
    status_patch,
    summarize,
    verdict,
)
from nexrl_operator.progress import RUNTIME_KEYS, progress_patch, status_path

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
    assert restarting["message"] == ("the run failed; restart 1 of 1: a new RayJob runs it again from the "
                                     "start (resuming from a checkpoint is not supported yet)")
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
    assert "starts from the beginning: resuming from a checkpoint is not supported yet" in applied["message"]


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
    assert set(patch) == {"phase", "conditions", "message", "startTime"}


@pytest.mark.parametrize(("obj", "expected"), [
    ({"kind": "RayJob", "metadata": {"name": "j", "uid": "u", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
      "spec": {"suspend": True}, "status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}},
     Child("RayJob", "j", "u", suspend=True, kueue=True, job_status="RUNNING", deployment_status="Running")),
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
