"""examples/ is one set an admin can apply together: namespaces, the NexRLQuota, Kueue's queues and
the jobs. Every job validates, the quota admits or queues each of its jobs (none can never fit),
and no Kueue job runs in a namespace a NexRLQuota governs (its GPUs would be counted twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from nexrl_operator.admission import Quota, State, plan, selecting
from nexrl_operator.api import KIND, total_gpus
from nexrl_operator.quota_views import job_view, quota_view
from nexrl_operator.spec_checks import parse_job

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
T0 = "2026-01-01T00:00:00Z"


def documents() -> list[dict[str, Any]]:
    paths = sorted(EXAMPLES.glob("*.yaml"))
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def stored(doc: dict[str, Any], i: int) -> dict[str, Any]:
    """The object as the API server stores it (uid, creation time)."""
    meta = {**doc["metadata"], "uid": f"uid-{i}", "creationTimestamp": T0, "generation": 1}
    return {**doc, "metadata": meta}


def namespaces() -> dict[str, dict[str, str]]:
    return {ns["metadata"]["name"]: dict(ns["metadata"].get("labels") or {}) for ns in of_kind("Namespace")}


def quotas() -> list[Quota]:
    views = [quota_view(stored(q, i)) for i, q in enumerate(of_kind("NexRLQuota"))]
    assert all(v.quota is not None for v in views), [v.error for v in views]
    return [v.quota for v in views if v.quota is not None]


def test_the_set_has_namespaces_a_quota_kueue_and_jobs():
    kinds = {doc["kind"] for doc in documents()}
    assert {"Namespace", "NexRLQuota", "LocalQueue", "ClusterQueue", KIND} <= kinds
    jobs = of_kind(KIND)
    used = {job["metadata"].get("namespace") for job in jobs}
    assert used <= set(namespaces()), "a job's namespace is missing"
    assert any(job["spec"].get("scheduling", {}).get("queueName") for job in jobs)
    assert any(not job["spec"].get("scheduling", {}).get("queueName") for job in jobs)


def test_every_job_validates():
    for job in of_kind(KIND):
        parse_job(job)  # raises JobValidationError naming the field
        parse_job({**job, "spec": {k: v for k, v in job["spec"].items() if k != "image"}},
                  default_image="nexrl/nexrl:0.1.0")  # with the chart's default, image is optional


def test_the_quota_admits_or_queues_every_job_it_governs():
    views = [job_view(stored(job, i)) for i, job in enumerate(of_kind(KIND))]
    demands = [v.demand for v in views if v.demand is not None]
    kueue = [v for v in views if v.spec is not None and v.spec.scheduling.queue_name]
    assert len(demands) + len(kueue) == len(views)  # every job: a NexRLQuota's or Kueue's
    governed = selecting(quotas(), namespaces())
    result = plan(demands, quotas(), namespaces())
    for demand in demands:
        decision = result.decisions[demand.uid]
        assert decision.state in (State.ADMITTED, State.QUEUED), (demand.name, decision.message)
        assert governed[demand.namespace], f"{demand.name}: no NexRLQuota governs {demand.namespace}"
    # each alone on an empty cluster is admitted at once: no example waits for GPUs it can never have
    for demand in demands:
        alone = plan([demand], quotas(), namespaces()).decisions[demand.uid]
        assert alone.state is State.ADMITTED, (demand.name, alone.message)


def test_no_kueue_job_in_a_namespace_a_nexrlquota_governs():
    governed = selecting(quotas(), namespaces())
    local_queues = {(q["metadata"]["namespace"], q["metadata"]["name"]) for q in of_kind("LocalQueue")}
    cluster_queues = {q["metadata"]["name"]: q for q in of_kind("ClusterQueue")}
    for job in of_kind(KIND):
        queue = job["spec"].get("scheduling", {}).get("queueName")
        if not queue:
            continue
        ns = job["metadata"]["namespace"]
        assert not governed[ns], f"{job['metadata']['name']}: Kueue job in {ns}, governed by a NexRLQuota"
        assert (ns, queue) in local_queues, f"no LocalQueue {queue} in {ns}"
        # ... and its ClusterQueue has the GPUs it asks for
        (local,) = [q for q in of_kind("LocalQueue")
                    if (q["metadata"]["namespace"], q["metadata"]["name"]) == (ns, queue)]
        cq = cluster_queues[local["spec"]["clusterQueue"]]
        gpus = sum(r["nominalQuota"] for group in cq["spec"]["resourceGroups"] for flavor in group["flavors"]
                   for r in flavor["resources"] if r["name"] == "nvidia.com/gpu")
        assert total_gpus(parse_job(job).spec) <= gpus


@pytest.mark.parametrize("doc", of_kind("NexRLQuota"), ids=lambda d: d["metadata"]["name"])
def test_no_example_job_is_above_its_quotas_per_job_limit(doc: dict[str, Any]):
    limit = doc["spec"].get("maxGpusPerJob")
    governed = selecting(quotas(), namespaces())
    for job in of_kind(KIND):
        ns = job["metadata"]["namespace"]
        if limit is not None and [q.name for q in governed[ns]][:1] == [doc["metadata"]["name"]]:
            assert total_gpus(parse_job(job).spec) <= limit, job["metadata"]["name"]
