"""quota_views.py (objects -> admission inputs, plans -> statuses) and job_status.py's admission parts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nexrl_operator.admission import Decision, State
from nexrl_operator.api import NexRLJobSpec
from nexrl_operator.job_status import Observation, desired_status, is_finished
from nexrl_operator.quota_views import (
    admitted_spec,
    count,
    gpu_shape,
    job_view,
    quota_status,
    quota_view,
    resource_quota_limits,
)
from nexrl_operator.spec_changes import APPLIED_SPEC, pending_restart, spec_dump

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
SPEC = {"recipe": "/r.yaml", "image": "img", "model": {"name": "m"}, "inference": {"replicas": 2},
        "trainer": {"nodes": 1, "gpusPerNode": 2}}
QUEUED = Decision(State.QUEUED, 4, "needs 4 nvidia.com/gpu, quota q has 0 of 4 free; no jobs ahead", "q")
REJECTED = Decision(State.REJECTED, 4, "needs 4 nvidia.com/gpu, more than quota q allows in all (2)", "q")
ADMITTED = Decision(State.ADMITTED, 4, "admitted by quota q: 4 nvidia.com/gpu", "q", new=True)


def body(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None, **spec: Any
         ) -> dict[str, Any]:
    return {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob",
            "metadata": {"name": "j", "namespace": "team-a", "uid": "u1", "generation": 2,
                         "creationTimestamp": T0, "annotations": annotations or {}},
            "spec": {**SPEC, **spec}, "status": status or {}}


def json_dump(spec: NexRLJobSpec) -> str:
    return json.dumps(spec_dump(spec))


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize(("quantity", "value"), [("4", 4), (4, 4), ("2k", 2000), ("1Ki", 1024), ("1500m", 1),
                                                 ("500m", 0), ("1.5", 1)])
def test_count_reads_quantities(quantity: Any, value: int) -> None:
    assert count(quantity) == value


def test_resource_quota_limits_read_gpu_requests_only() -> None:
    rq = {"metadata": {"name": "gpus", "namespace": "team-a"},
          "spec": {"hard": {"requests.nvidia.com/gpu": "8", "requests.cpu": "100"}},
          "status": {"used": {"requests.nvidia.com/gpu": "3"}}}
    (limit,) = resource_quota_limits(rq)
    assert (limit.namespace, limit.name, limit.resource, limit.hard, limit.used) == (
        "team-a", "gpus", "nvidia.com/gpu", 8, 3)
    assert resource_quota_limits({"metadata": {"name": "cpu", "namespace": "x"},
                                  "spec": {"hard": {"cpu": "4"}}}) == []


def test_a_new_job_waits_for_admission() -> None:
    view = job_view(body())
    assert view.demand is not None and (view.demand.gpus, view.demand.admitted) == (4, None)
    assert view.waiting_since == T0 and view.generation == 2


@pytest.mark.parametrize("case", [
    {"spec": {"suspend": True}},
    {"spec": {"scheduling": {"queueName": "lq"}}},
    {"spec": {"model": None}},  # invalid: inference needs a model
    {"status": {"phase": "Succeeded"}},
])
def test_jobs_that_take_no_part_in_admission(case: dict[str, Any]) -> None:
    assert job_view(body(case.get("status"), **case.get("spec", {}))).demand is None


def test_a_queue_name_set_after_the_start_does_not_hide_the_job_from_its_quota() -> None:
    started = {APPLIED_SPEC: json_dump(NexRLJobSpec.model_validate(SPEC))}
    view = job_view(body({"phase": "Running", "admittedGpus": 4}, started, scheduling={"queueName": "lq"}))
    assert view.demand is not None and view.demand.admitted == 4
    assert view.restart_fields == ("spec.scheduling.queueName",)


def test_what_a_job_holds() -> None:
    admitted = job_view(body({"phase": "Running", "admittedGpus": 4})).demand
    assert admitted is not None and admitted.admitted == 4 and admitted.running
    # Started before quotas existed (no Admitted condition): it holds what it asks.
    legacy = job_view(body({"phase": "Provisioning"})).demand
    assert legacy is not None and legacy.admitted == 4
    admission = {"type": "Admitted", "status": "False", "reason": "WaitingForQuota", "message": "",
                 "lastTransitionTime": T1}
    waiting = {"phase": "Queued", "conditions": [admission]}
    view = job_view(body(waiting))
    assert view.demand is not None and view.demand.admitted is None and view.waiting_since == T1


def test_an_invalid_edit_of_an_admitted_job_keeps_its_gpus_counted() -> None:
    admitted = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "admitted",
                "lastTransitionTime": T0}
    status = {"phase": "Running", "admittedGpus": 4, "conditions": [admitted]}
    view = job_view(body(status, model=None))  # inference without a model: invalid
    assert view.spec is None and view.demand is not None and view.demand.admitted == view.demand.gpus == 4
    failed = desired_status(Observation(2, status, T1, invalid="spec.model=None: required"))
    assert failed["phase"] == "Failed" and failed["admittedGpus"] == 4
    assert conditions(failed)["Admitted"]["status"] == "True"


def test_gpu_shape_keeps_the_applied_shape_but_the_live_replicas() -> None:
    applied = NexRLJobSpec.model_validate(SPEC)
    spec = NexRLJobSpec.model_validate({**SPEC, "inference": {"replicas": 3}, "trainer": {"nodes": 4}})
    shape = gpu_shape(spec, spec_dump(applied))
    assert (shape.inference.replicas, shape.trainer.nodes) == (3, 1)
    view = job_view(body(annotations={APPLIED_SPEC: json_dump(applied)}, inference={"replicas": 3},
                         trainer={"nodes": 4, "gpusPerNode": 2}))
    assert view.demand is not None and view.demand.gpus == 3 + 2
    assert view.restart_fields == ("spec.trainer.nodes",)


def test_admitted_spec_keeps_the_replicas_the_gpus_allow() -> None:
    spec = NexRLJobSpec.model_validate({**SPEC, "inference": {"replicas": 5, "gpusPerReplica": 2}})  # 12
    assert admitted_spec(spec, None, 12) is spec
    assert admitted_spec(spec, None, 8).inference.replicas == 3
    assert admitted_spec(spec, None, 7).inference.replicas == 2


def test_kueue_jobs_need_a_restart_to_change_replicas() -> None:
    applied = {"annotations": {APPLIED_SPEC: json_dump(NexRLJobSpec.model_validate(SPEC))}}
    scaled = {**SPEC, "inference": {"replicas": 3}}
    assert pending_restart(applied, NexRLJobSpec.model_validate(scaled)) == []
    kueue = NexRLJobSpec.model_validate({**scaled, "scheduling": {"queueName": "lq"}})
    assert pending_restart(applied, kueue) == ["spec.inference.replicas", "spec.scheduling.queueName"]


def test_quota_views_and_statuses() -> None:
    view = quota_view({"metadata": {"name": "q", "generation": 3}, "spec": {"gpus": -1}})
    assert view.quota is None and view.error is not None and "spec.gpus" in view.error
    assert quota_status(None, view)["message"].startswith("invalid: spec.gpus")
    ok = quota_view({"metadata": {"name": "q", "creationTimestamp": T0}, "spec": {"namespaces": ["a"]}})
    assert ok.quota is not None and ok.quota.spec.namespaces == ["a"]


# --- job_status.py with admission decisions -----------------------------------------------------------

def observe(decision: Decision | None, status: dict[str, Any] | None = None, **spec: Any) -> Observation:
    job = NexRLJobSpec.model_validate({**SPEC, **spec})
    return Observation(1, status or {}, T0, spec=job, admission=decision)


def test_a_queued_job_says_why_and_holds_nothing() -> None:
    status = desired_status(observe(QUEUED))
    assert (status["phase"], status["message"]) == ("Queued", QUEUED.message)
    admitted = conditions(status)["Admitted"]
    assert (admitted["status"], admitted["reason"]) == ("False", "WaitingForQuota")
    assert status["admittedGpus"] is None and conditions(status)["Ready"]["reason"] == "WaitingForQuota"


def test_a_rejected_job_fails_but_is_not_finished() -> None:
    status = desired_status(observe(REJECTED))
    assert (status["phase"], conditions(status)["Failed"]["reason"]) == ("Failed", "QuotaExceeded")
    assert "completionTime" not in status and not is_finished(status)


def test_an_admitted_job_records_its_gpus_until_it_is_suspended() -> None:
    status = desired_status(observe(ADMITTED))
    assert status["admittedGpus"] == 4 and conditions(status)["Admitted"]["status"] == "True"
    suspended = desired_status(observe(None, status, suspend=True))
    assert suspended["phase"] == "Suspended" and suspended["admittedGpus"] is None
    assert conditions(suspended)["Admitted"]["reason"] == "Released"


def test_a_waiting_scale_up_shows_in_spec_applied() -> None:
    waits = "scale-up needs 2 more nvidia.com/gpu"
    pending = Decision(State.ADMITTED, 4, ADMITTED.message, "q", pending=waits)
    applied = conditions(desired_status(observe(pending)))["SpecApplied"]
    assert (applied["status"], applied["reason"]) == ("False", "ScaleUpWaiting")
    assert applied["message"].startswith("scale-up needs 2 more")


def test_jobs_outside_admission_get_no_admitted_condition() -> None:
    status = desired_status(observe(None))
    assert "Admitted" not in conditions(status) and "admittedGpus" not in status
