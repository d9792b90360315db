"""admission.py: tables of quotas and jobs -> admit / queue / reject decisions, and policy properties."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from nexrl_operator.admission import Demand, Plan, Quota, ResourceQuotaLimit, State, plan
from nexrl_operator.quota_api import LabelSelector, NexRLQuotaSpec

H100 = {"nvidia.com/gpu.product": "H100"}
A100 = {"nvidia.com/gpu.product": "A100"}


def job(name: str, gpus: int, ns: str = "team-a", t: int = 0, *, admitted: int | None = None,
        priority: int = 0, selector: dict[str, str] | None = None, running: bool = False) -> Demand:
    return Demand(uid=f"{ns}/{name}", namespace=ns, name=name, created=f"2026-01-01T00:{t:02d}:00Z",
                  gpus=gpus, priority=priority, node_selector=selector or {}, admitted=admitted,
                  running=running)


def quota(name: str = "team-a", t: int = 0, **spec: Any) -> Quota:
    spec.setdefault("namespaces", [name])
    return Quota(name, f"2025-12-01T00:{t:02d}:00Z", NexRLQuotaSpec.model_validate(spec))


def decide(jobs: list[Demand], *quotas: Quota, namespaces: dict[str, dict[str, str]] | None = None,
           limits: tuple[ResourceQuotaLimit, ...] = ()) -> Plan:
    return plan(jobs, list(quotas), namespaces or {}, limits)


def states(result: Plan) -> dict[str, str]:
    return {uid.split("/")[1]: d.state.value for uid, d in result.decisions.items()}


def message(result: Plan, name: str, ns: str = "team-a") -> str:
    return result.decisions[f"{ns}/{name}"].message


def hold(result: Plan, jobs: list[Demand]) -> list[Demand]:
    """The jobs as the next pass sees them: every admission recorded."""
    return [dataclasses.replace(j, admitted=result.decisions[j.uid].gpus)
            if result.decisions[j.uid].state is State.ADMITTED else j for j in jobs]


# --- gang admission and messages --------------------------------------------------------------------

def test_whole_jobs_are_admitted_in_creation_order_and_the_rest_wait() -> None:
    jobs = [job("a", 8, t=1), job("b", 6, t=2), job("c", 4, t=3)]
    result = decide(jobs, quota(gpus=16))
    assert states(result) == {"a": "Admitted", "b": "Admitted", "c": "Queued"}
    assert message(result, "c") == "needs 4 nvidia.com/gpu, quota team-a has 2 of 16 free; no jobs ahead"
    assert message(result, "a") == "admitted by quota team-a: 8 nvidia.com/gpu"
    usage = result.quotas["team-a"]
    assert (usage.in_use, usage.reserved, usage.running, usage.queued) == (14, 2, 2, 1)
    assert usage.message == "first in line: team-a/c: needs 4 nvidia.com/gpu, quota team-a has 2 of 16 free"


def test_message_says_what_the_job_waits_for_and_how_many_are_ahead() -> None:
    jobs = [job("held", 13, admitted=13), job("p", 10, t=1), job("q", 9, t=2), job("r", 8, t=3)]
    result = decide(jobs, quota(gpus=16))
    assert message(result, "p") == "needs 10 nvidia.com/gpu, quota team-a has 3 of 16 free; no jobs ahead"
    assert message(result, "r") == ("needs 8 nvidia.com/gpu, quota team-a has 3 of 16 free "
                                    "(3 held for jobs ahead); 2 jobs ahead")
    assert result.quotas["team-a"].reserved == 3


def test_jobs_without_a_quota_are_admitted_and_zero_gpu_jobs_always_fit() -> None:
    result = decide([job("free", 64, ns="elsewhere"), job("cpu", 0, t=5)], quota(gpus=0))
    assert states(result) == {"free": "Admitted", "cpu": "Admitted"}
    assert message(result, "free", "elsewhere") == "admitted: no NexRLQuota covers namespace elsewhere"


# --- order: priorities, creation time, fairness ------------------------------------------------------

@pytest.mark.parametrize(("jobs", "settings_", "first"), [
    ([job("old", 4, t=1), job("new", 4, t=2)], [], "old"),
    ([job("old", 4, t=1), job("urgent", 4, t=2, priority=5)], [], "urgent"),
    ([job("a", 4, t=1), job("b", 4, ns="team-b", t=2)], [{"namespace": "team-b", "priority": 1}], "b"),
    ([job("a", 4, t=1, priority=100), job("b", 4, ns="team-b", t=2)],
     [{"namespace": "team-b", "priority": 1}], "b"),  # a job's own priority only orders its namespace
], ids=["creation-time", "queue-priority", "namespace-priority", "priority-stays-in-namespace"])
def test_order_is_priority_then_creation_time(jobs: list[Demand], settings_: list[dict[str, Any]],
                                              first: str) -> None:
    result = decide(jobs, quota(gpus=4, namespaces=["team-a", "team-b"], namespaceSettings=settings_))
    assert [name for name, state in states(result).items() if state == "Admitted"] == [first]


def test_fair_share_serves_the_namespace_with_less_per_weight_first() -> None:
    running = [job("a-run", 4, admitted=4), job("b-run", 2, ns="team-b", admitted=2)]
    waiting = [job("a-next", 2, t=1), job("b-next", 2, ns="team-b", t=2)]
    q = dict(gpus=8, namespaces=["team-a", "team-b"])
    assert states(decide(running + waiting, quota(**q)))["b-next"] == "Admitted"  # 2/1 < 4/1
    weighted = quota(**q, namespaceSettings=[{"namespace": "team-a", "weight": 4}])
    assert states(decide(running + waiting, weighted))["a-next"] == "Admitted"  # 4/4 < 2/1


def test_equal_shares_go_to_the_older_job_across_namespaces() -> None:
    jobs = [job("b", 4, ns="team-b", t=1), job("a", 4, t=2)]
    assert states(decide(jobs, quota(gpus=4, namespaces=["team-a", "team-b"]))) == {
        "b": "Admitted", "a": "Queued"}


# --- no starvation ----------------------------------------------------------------------------------

def test_a_large_job_first_in_line_is_not_overtaken_by_small_ones() -> None:
    jobs = [job("run", 6, admitted=6), job("big", 8, t=1)] + [job(f"small{i}", 1, t=2 + i) for i in range(3)]
    result = decide(jobs, quota(gpus=8))
    assert states(result) == {"run": "Admitted", "big": "Queued", "small0": "Queued", "small1": "Queued",
                              "small2": "Queued"}
    assert "(2 held for jobs ahead); 1 job ahead" in message(result, "small0")
    # The running job finishes: the GPUs go to the big job, not to the small ones.
    after = decide(jobs[1:], quota(gpus=8))
    assert states(after) == {"big": "Admitted", "small0": "Queued", "small1": "Queued", "small2": "Queued"}


def test_small_jobs_use_gpus_a_blocked_job_cannot_use() -> None:
    types = [{"name": "h100", "nodeLabels": H100, "gpus": 4}, {"name": "a100", "nodeLabels": A100, "gpus": 8}]
    jobs = [job("h-run", 2, selector=H100, admitted=2), job("h-big", 4, t=1, selector=H100),
            job("a-small", 2, t=2, selector=A100)]
    result = decide(jobs, quota(gpus=16, gpuTypes=types))
    assert states(result) == {"h-run": "Admitted", "h-big": "Queued", "a-small": "Admitted"}
    assert message(result, "h-big") == ("needs 4 nvidia.com/gpu of type h100, quota team-a has 2 of 4 free; "
                                        "no jobs ahead")
    assert result.quotas["team-a"].types == [("h100", 4, 2, 2), ("a100", 8, 2, 0)]


# --- live tuning: limits lowered and raised, jobs finishing -------------------------------------------

def test_lowering_a_limit_keeps_running_jobs_and_makes_new_ones_wait() -> None:
    jobs = [job("a", 8, admitted=8), job("b", 8, t=1, admitted=8), job("c", 2, t=2)]
    result = decide(jobs, quota(gpus=10))
    assert states(result) == {"a": "Admitted", "b": "Admitted", "c": "Queued"}
    assert result.quotas["team-a"].in_use == 16
    assert message(result, "c") == "needs 2 nvidia.com/gpu, quota team-a has 0 of 10 free; no jobs ahead"


def test_raising_a_limit_admits_waiting_jobs_in_order() -> None:
    jobs = [job("a", 8, admitted=8), job("b", 4, t=1), job("c", 4, t=2), job("d", 4, t=3)]
    assert states(decide(jobs, quota(gpus=8))) == {"a": "Admitted", "b": "Queued", "c": "Queued",
                                                   "d": "Queued"}
    result = decide(jobs, quota(gpus=16))
    assert states(result) == {"a": "Admitted", "b": "Admitted", "c": "Admitted", "d": "Queued"}
    assert result.decisions["team-a/b"].new and not result.decisions["team-a/a"].new


def test_finishing_jobs_free_gpus_for_the_next_in_line() -> None:
    jobs = [job("a", 8, admitted=8), job("b", 8, t=1, admitted=8), job("c", 8, t=2), job("d", 8, t=3)]
    result = decide(jobs, quota(gpus=16))
    assert states(result)["c"] == "Queued" and "1 job ahead" in message(result, "d")
    result = decide(jobs[1:], quota(gpus=16))  # a finished
    assert states(result) == {"b": "Admitted", "c": "Admitted", "d": "Queued"}


def test_max_running_jobs_counts_admitted_jobs_and_zero_pauses_without_rejecting() -> None:
    jobs = [job("a", 1, admitted=1), job("b", 1, t=1), job("c", 1, t=2)]
    assert states(decide(jobs, quota(maxRunningJobs=2))) == {"a": "Admitted", "b": "Admitted", "c": "Queued"}
    paused = decide(jobs, quota(maxRunningJobs=0))
    assert states(paused) == {"a": "Admitted", "b": "Queued", "c": "Queued"}
    assert message(paused, "b") == ("quota team-a runs at most 0 jobs at a time and 1 are admitted; "
                                    "no jobs ahead")


def test_a_scale_up_waits_in_line_and_the_job_keeps_what_it_holds() -> None:
    jobs = [job("grow", 6, admitted=4), job("other", 4, t=1, admitted=4)]
    waiting = decide(jobs, quota(gpus=8)).decisions["team-a/grow"]
    assert (waiting.state, waiting.gpus, waiting.new) == (State.ADMITTED, 4, False)
    assert waiting.pending == ("scale-up needs 2 more nvidia.com/gpu, quota team-a has 0 of 8 free; "
                               "no jobs ahead")
    grown = decide(jobs, quota(gpus=10)).decisions["team-a/grow"]
    assert (grown.state, grown.gpus, grown.new, grown.pending) == (State.ADMITTED, 6, True, None)
    capped = decide(jobs, quota(gpus=16, maxGpusPerJob=5)).decisions["team-a/grow"]
    assert capped.gpus == 4 and capped.pending is not None and "maxGpusPerJob: 5" in capped.pending


# --- never fits -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "gpus", "reason"), [
    ({"gpus": 16, "maxGpusPerJob": 8}, 9,
     "needs 9 nvidia.com/gpu, more than quota team-a allows per job (maxGpusPerJob: 8)"),
    ({"gpus": 16}, 24, "needs 24 nvidia.com/gpu, more than quota team-a allows in all (16)"),
    ({"gpuTypes": [{"name": "h100", "nodeLabels": H100, "gpus": 4}]}, 8,
     "needs 8 nvidia.com/gpu of type h100, more than quota team-a allows in all (4); "
     "set scheduling.nodeSelector to pick another GPU type"),
    ({"gpus": 1}, 2, "needs 2 nvidia.com/gpu, more than quota team-a allows in all (1)"),
])
def test_never_fitting_jobs_are_rejected_with_the_limit(spec: dict[str, Any], gpus: int, reason: str) -> None:
    result = decide([job("huge", gpus), job("ok", 1, t=1)], quota(**spec))
    assert states(result) == {"huge": "Rejected", "ok": "Admitted"}
    assert message(result, "huge") == reason
    assert result.quotas["team-a"].rejected == 1 and result.quotas["team-a"].reserved == 0


def test_a_job_on_another_gpu_type_does_not_count_against_this_one() -> None:
    types = [{"name": "h100", "nodeLabels": H100, "gpus": 4}]
    result = decide([job("a100", 8, selector=A100)], quota(gpuTypes=types))
    assert states(result) == {"a100": "Admitted"}
    assert result.quotas["team-a"].types == [("h100", 4, 0, 0)]


# --- namespace ResourceQuotas -----------------------------------------------------------------------

def rq(hard: int, used: int, ns: str = "team-a") -> ResourceQuotaLimit:
    return ResourceQuotaLimit(ns, "gpus", "nvidia.com/gpu", hard, used)


def test_a_resource_quota_is_a_limit_too() -> None:
    result = decide([job("a", 4, t=1), job("b", 6, t=2)], limits=(rq(8, 2),))  # 2 GPUs of other pods
    assert states(result) == {"a": "Admitted", "b": "Queued"}
    assert message(result, "b") == ("needs 6 nvidia.com/gpu, ResourceQuota gpus in namespace team-a has "
                                    "2 of 8 free; no jobs ahead")
    rejected = decide([job("c", 9)], limits=(rq(8, 0),))
    assert message(rejected, "c") == ("needs 9 nvidia.com/gpu, more than ResourceQuota gpus in namespace "
                                      "team-a allows in all (8)")


@pytest.mark.parametrize(("running", "used", "fits"), [(True, 4, True), (False, 0, True), (False, 4, False)])
def test_admitted_jobs_count_once_in_a_resource_quota(running: bool, used: int, fits: bool) -> None:
    # A running job's pods are in status.used; a starting one's may not be yet (counted by us instead).
    jobs = [job("held", 4, admitted=4, running=running), job("next", 4, t=1)]
    assert (states(decide(jobs, limits=(rq(8, used),)))["next"] == "Admitted") is fits


def test_a_job_blocked_by_its_namespace_does_not_stall_other_namespaces() -> None:
    jobs = [job("a", 4, t=1), job("b", 4, ns="team-b", t=2)]
    result = decide(jobs, quota(gpus=8, namespaces=["team-a", "team-b"]), limits=(rq(4, 2),))
    assert states(result) == {"a": "Queued", "b": "Admitted"}


# --- which quota governs a namespace ----------------------------------------------------------------

def test_the_oldest_quota_that_selects_a_namespace_governs_it() -> None:
    old = quota("old", t=1, namespaces=[], namespaceSelector={"matchLabels": {"team": "a"}}, gpus=4)
    new = quota("new", t=2, namespaces=["team-a"], gpus=100)
    result = decide([job("a", 8)], new, old, namespaces={"team-a": {"team": "a"}})
    assert states(result) == {"a": "Rejected"} and result.quotas["old"].namespaces == ["team-a"]
    assert result.quotas["new"].namespaces == []
    assert result.quotas["new"].message == "namespace team-a is governed by the older quota old"


@pytest.mark.parametrize(("selector", "labels", "match"), [
    ({}, {}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "b"}, True),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {}, True),
])
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], match: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is match


# --- properties over random workloads -------------------------------------------------------------

@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Demand], Quota]:
    jobs = []
    for i in range(draw(st.integers(0, 12))):
        gpus = draw(st.integers(0, 10))
        admitted = draw(st.sampled_from([None, None, min(1, gpus), gpus]))  # held: all, or less (scale-up)
        jobs.append(job(f"j{i}", gpus, ns=draw(st.sampled_from(["team-a", "team-b"])), t=i,
                        priority=draw(st.integers(0, 2)), admitted=admitted))
    spec = {"namespaces": ["team-a", "team-b"], "gpus": draw(st.integers(0, 20)),
            "maxRunningJobs": draw(st.sampled_from([None, 1, 3])),
            "namespaceSettings": [{"namespace": "team-b", "weight": draw(st.integers(1, 3)),
                                   "priority": draw(st.integers(0, 1))}]}
    return jobs, quota("q", **spec)


# Found by the search: team-b's new 8-GPU job, blocked only by the running-job slot, held back 8
# GPUs, so team-a's older scale-up waited; team-b's own scale-up then raised team-b's share, and
# the next pass put team-a first and admitted it. Admission repeats its pass until it is stable.
SLOT_BLOCKED_RESERVER = ([job("j0", 2, ns="team-a", t=0, admitted=1), job("j1", 8, ns="team-b", t=1),
                          job("j2", 0, ns="team-a", t=2), job("j3", 2, ns="team-b", t=3, admitted=1)],
                         quota("q", namespaces=["team-a", "team-b"], gpus=11, maxRunningJobs=1,
                               namespaceSettings=[{"namespace": "team-b", "weight": 2}]))


@given(workloads())
@example(SLOT_BLOCKED_RESERVER)
def test_new_admissions_never_exceed_a_limit_and_a_second_pass_changes_nothing(
        workload: tuple[list[Demand], Quota]) -> None:
    jobs, q = workload
    result = decide(jobs, q)
    held = sum(j.admitted or 0 for j in jobs)
    new = sum(d.gpus - (j.admitted or 0) for j in jobs if (d := result.decisions[j.uid]).new)
    assert q.spec.gpus is not None and (new == 0 or held + new <= q.spec.gpus)
    again = decide(hold(result, jobs), q)
    assert not any(d.new for d in again.decisions.values())
    assert states(again) == states(result)


def test_a_plan_admits_everything_that_fits_in_one_call() -> None:
    jobs, q = SLOT_BLOCKED_RESERVER
    result = decide(jobs, q)
    assert {uid: (d.state.value, d.gpus, d.new) for uid, d in result.decisions.items()} == {
        "team-a/j0": ("Admitted", 2, True), "team-b/j3": ("Admitted", 2, True),
        "team-b/j1": ("Queued", 8, False), "team-a/j2": ("Queued", 0, False)}
    assert result.quotas["q"].in_use == 4
