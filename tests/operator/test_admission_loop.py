"""admission_loop.py with in-memory indexes and a recording client: what the loop writes, and that an
admission made but not yet seen in the index is never given away twice."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from nexrl_operator.admission import State
from nexrl_operator.admission_loop import JOBS, NAMESPACES, QUOTAS, RESOURCE_QUOTAS, Admitter
from nexrl_operator.kube import ApiError
from nexrl_operator.quota_views import JobView, job_view, quota_view

SPEC = {"recipe": "/r.yaml", "image": "img", "model": {"name": "m"}, "inference": {"replicas": 2},
        "trainer": {"nodes": 1, "gpusPerNode": 2}}  # 4 GPUs


class RecordingKube:
    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.missing = missing

    async def patch(self, obj: Mapping[str, Any], body: Mapping[str, Any], subresource: str | None = None
                    ) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        if name in self.missing:
            raise ApiError(404, "NotFound", f"{name} not found")
        self.patches.append((obj["kind"], name, dict(body["status"])))
        return {}


def job(name: str, t: int, status: dict[str, Any] | None = None) -> JobView:
    """A job its handlers have seen (it has an observedGeneration)."""
    return job_view({"metadata": {"name": name, "namespace": "team-a", "uid": name, "generation": 1,
                                  "creationTimestamp": f"2026-01-01T00:0{t}:00Z"},
                     "spec": SPEC, "status": {"observedGeneration": 1, **(status or {})}})


def indexes(*jobs: JobView, gpus: int = 4) -> dict[str, dict[str, list[Any]]]:
    quota = quota_view({"metadata": {"name": "q", "creationTimestamp": "2025-01-01T00:00:00Z"},
                        "spec": {"namespaces": ["team-a"], "gpus": gpus}})
    return {JOBS: {j.uid: [j] for j in jobs}, QUOTAS: {"q": [quota]}, RESOURCE_QUOTAS: {}, NAMESPACES: {}}


def admitter(kube: RecordingKube, *jobs: JobView, gpus: int = 4) -> Admitter:
    loop = Admitter(kube, status_interval=60)  # type: ignore[arg-type]
    loop.attach(indexes(*jobs, gpus=gpus))
    return loop


def test_the_loop_admits_what_fits_and_tells_the_rest_why() -> None:
    kube = RecordingKube()
    loop = admitter(kube, job("a", 1), job("b", 2))
    asyncio.run(loop.pass_once())
    written = {(kind, name): status for kind, name, status in kube.patches}
    assert written[("NexRLJob", "a")] == {"admittedGpus": 4}
    assert written[("NexRLJob", "b")]["phase"] == "Queued"
    message = "needs 4 nvidia.com/gpu, quota q has 0 of 4 free; no jobs ahead"
    assert written[("NexRLJob", "b")]["message"] == message
    quota = written[("NexRLQuota", "q")]
    assert (quota["gpusInUse"], quota["runningJobs"], quota["queuedJobs"], quota["namespaces"]) == (
        4, 1, 1, ["team-a"])
    assert loop.committed == {"a": 4}


def test_an_admission_not_yet_in_the_index_is_not_given_away_again() -> None:
    kube = RecordingKube()
    loop = admitter(kube, job("a", 1))
    first = loop.decide(job("a", 1))
    assert first is not None and first.state is State.ADMITTED and first.new
    # The index still shows "a" waiting; a newer job must not get a's GPUs.
    later = loop.decide(job("b", 2))
    assert later is not None and later.state is State.QUEUED
    # Once the index shows what a holds, the in-memory record is dropped.
    loop.attach({})  # already attached: a no-op
    loop.indexes[JOBS]["a"] = [job("a", 1, {"admittedGpus": 4})]  # type: ignore[index]
    loop.kick()
    loop.compute()
    assert loop.committed == {}


def test_a_job_that_holds_all_it_asks_is_decided_without_a_plan() -> None:
    loop = admitter(RecordingKube(), gpus=0)
    decision = loop.decide(job("a", 1, {"admittedGpus": 4}))  # over the (lowered) limit: kept
    assert decision is not None and decision.state is State.ADMITTED and not decision.new
    assert decision.message == "admitted by quota q: 4 nvidia.com/gpu"


def test_a_job_no_handler_has_seen_is_left_to_its_create_handler() -> None:
    kube = RecordingKube()
    new = job_view({"metadata": {"name": "new", "namespace": "team-a", "uid": "new", "generation": 1,
                                 "creationTimestamp": "2026-01-01T00:01:00Z"}, "spec": SPEC})
    loop = admitter(kube, new, job("b", 2))
    asyncio.run(loop.pass_once())
    written = {name: status for kind, name, status in kube.patches if kind == "NexRLJob"}
    assert list(written) == ["b"] and written["b"]["phase"] == "Queued"  # b waits behind the new job
    assert loop.committed == {}


def test_a_job_deleted_before_its_admission_is_written_frees_its_gpus() -> None:
    kube = RecordingKube(missing=("a",))
    loop = admitter(kube, job("a", 1))
    asyncio.run(loop.pass_once())
    assert loop.committed == {}


def test_message_only_changes_are_throttled_per_job() -> None:
    kube = RecordingKube()
    loop = admitter(kube, job("a", 1, {"admittedGpus": 4}), job("b", 2), job("c", 3))
    asyncio.run(loop.pass_once())
    queued = {name: status for kind, name, status in kube.patches if kind == "NexRLJob"}
    assert set(queued) == {"b", "c"} and "1 job ahead" in queued["c"]["message"]
    kube.patches.clear()
    c = job("c", 3, queued["c"])  # c's status as written; b is deleted, so c is now first in line
    loop.indexes = indexes(job("a", 1, {"admittedGpus": 4}), c)
    loop.kick()  # as the watch event of the deletion does
    asyncio.run(loop.pass_once())
    assert [name for kind, name, _ in kube.patches if kind == "NexRLJob"] == []  # within the interval
    loop.status_interval = 0
    asyncio.run(loop.pass_once())
    (status,) = [s for kind, name, s in kube.patches if (kind, name) == ("NexRLJob", "c")]
    assert status["message"].endswith("no jobs ahead")
