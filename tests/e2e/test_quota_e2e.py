"""GPU quotas end to end: the real operator process, NexRLQuotas edited with patch, the emulator.

Each test has its own namespaces and quota, so the tests are independent; every wait is a
condition with a timeout (``wait_for``). Jobs of BASE_SPEC ask for 4 GPUs (2 vLLM x 1 + 1 trainer x 2).
"""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import GROUP, VERSION, Cluster, condition
from harness import EmulatorThread, OperatorProcess, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

QUOTAS = "nexrlquotas"
_ids = itertools.count()


@pytest.fixture(scope="module")
def operator(server: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    port = free_port()
    process = OperatorProcess(
        server,
        tmp_path_factory.mktemp("operator"),
        "--status-interval",
        "0.3",
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
    )
    process.liveness = f"http://127.0.0.1:{port}/metrics"  # reused: where the metrics are
    with process:
        yield process
    assert "Traceback" not in process.log(), process.log()[-5000:]


class QuotaCluster(Cluster):
    """The cluster plus NexRLQuotas, ResourceQuotas and a finished-job shortcut."""

    def create_quota(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NexRLQuota",
            "metadata": {"name": name},
            "spec": spec,
        }
        self.custom.create_cluster_custom_object(GROUP, VERSION, QUOTAS, body)

    def patch_quota(self, name: str, **spec: Any) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, QUOTAS, name, {"spec": spec})

    def quota(self, name: str) -> dict[str, Any]:
        return self.custom.get_cluster_custom_object(GROUP, VERSION, QUOTAS, name).get("status") or {}

    def wait_quota(self, name: str, **expected: Any) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.quota(name)
            return status if all(status.get(k) == v for k, v in expected.items()) else None

        return wait_for(reached, what=f"quota {name} to show {expected}; it shows {self.quota(name)}")

    def wait_message(self, ns: str, name: str, message: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(ns, name)
            return job if job.get("status", {}).get("message") == message else None

        return wait_for(reached, what=f"{ns}/{name} to say {message!r}")

    def finish(self, ns: str, name: str) -> None:
        self.run_rayjob(ns, name, f"{name}-inference", job="SUCCEEDED", phase="Complete")
        self.wait_phase(ns, name, "Succeeded")

    def no_children(self, ns: str, *names: str) -> bool:
        """Nothing of these jobs exists, and nothing was ever created for them (so no pods either)."""
        created = [
            c.name or ""
            for c in self.server.emu.calls
            if (c.verb, c.namespace) == ("create", ns) and c.resource not in ("events", "nexrljobs")
        ]
        return all(not self.owned(ns, n) and not any(c.startswith(n) for c in created) for n in names)


@pytest.fixture()
def cluster(server: EmulatorThread, operator: OperatorProcess) -> QuotaCluster:
    return QuotaCluster(server)


@pytest.fixture()
def ids() -> str:
    return str(next(_ids))


def test_two_teams_queue_and_start_in_order_as_the_quota_is_edited(cluster: QuotaCluster, ids: str) -> None:
    a, b, quota = f"team-a-{ids}", f"team-b-{ids}", f"shared-{ids}"
    cluster.create_quota(quota, namespaces=[a, b], gpus=8)
    for name in ("a1", "a2"):
        cluster.create_job(a, name)
        cluster.wait_phase(a, name, "Provisioning")
    cluster.create_job(b, "b1")
    job = cluster.wait_phase(b, "b1", "Queued")
    assert job["status"]["message"] == f"needs 4 nvidia.com/gpu, quota {quota} has 0 of 8 free; no jobs ahead"
    assert (condition(job, "Admitted")["status"], condition(job, "Admitted")["reason"]) == (
        "False",
        "WaitingForQuota",
    )
    # Fair share: team a holds 8 GPUs and team b none, so b1 (created before) stays first in line.
    cluster.create_job(a, "a3")
    cluster.wait_message(a, "a3", f"needs 4 nvidia.com/gpu, quota {quota} has 0 of 8 free; 1 job ahead")
    cluster.wait_quota(quota, gpusInUse=8, runningJobs=2, queuedJobs=2, gpusReserved=0, namespaces=[a, b])
    assert cluster.no_children(b, "b1") and cluster.no_children(a, "a3")

    cluster.patch_quota(quota, gpus=12)  # raised: the first in line starts at once, the next still waits
    cluster.wait_phase(b, "b1", "Provisioning")
    assert cluster.owned(b, "b1")["Deployment"][0]["spec"]["replicas"] == 2
    cluster.wait_message(a, "a3", f"needs 4 nvidia.com/gpu, quota {quota} has 0 of 12 free; no jobs ahead")
    events = cluster.events(b, "b1")
    assert events[0] == "Queued" and "Provisioning" in events

    cluster.patch_quota(quota, gpus=4)  # lowered: nothing running is touched, new jobs wait
    cluster.wait_quota(quota, gpusInUse=12, runningJobs=3, queuedJobs=1)
    for ns, name in ((a, "a1"), (a, "a2"), (b, "b1")):
        assert cluster.job(ns, name)["status"]["phase"] == "Provisioning"
    cluster.finish(a, "a1")
    cluster.finish(a, "a2")
    cluster.wait_quota(quota, gpusInUse=4, runningJobs=1)
    assert cluster.job(a, "a3")["status"]["phase"] == "Queued" and cluster.no_children(a, "a3")
    cluster.finish(b, "b1")  # now under the new limit: the last job starts
    job = cluster.wait_phase(a, "a3", "Provisioning")
    assert job["status"]["admittedGpus"] == 4 and condition(job, "Admitted")["status"] == "True"
    cluster.wait_quota(quota, gpusInUse=4, runningJobs=1, queuedJobs=0)


def test_a_quota_selects_namespaces_by_label_as_they_are_relabelled(cluster: QuotaCluster, ids: str) -> None:
    ns, quota, label = f"labelled-{ids}", f"labels-{ids}", {"nexrl.io/quota": f"labels-{ids}"}
    cluster.core.create_namespace({"metadata": {"name": ns}})
    cluster.create_quota(quota, namespaceSelector={"matchLabels": label}, gpus=4)
    cluster.create_job(ns, "l1")  # no quota covers the namespace yet
    job = cluster.wait_phase(ns, "l1", "Provisioning")
    assert condition(job, "Admitted")["message"] == f"admitted: no NexRLQuota covers namespace {ns}"
    cluster.core.patch_namespace(ns, {"metadata": {"labels": label}})
    cluster.wait_quota(quota, namespaces=[ns], gpusInUse=4, runningJobs=1)  # l1 keeps its GPUs
    cluster.create_job(ns, "l2")
    job = cluster.wait_phase(ns, "l2", "Queued")
    assert job["status"]["message"] == f"needs 4 nvidia.com/gpu, quota {quota} has 0 of 4 free; no jobs ahead"


def test_priority_orders_a_namespace_queue(cluster: QuotaCluster, ids: str) -> None:
    ns, quota = f"prio-{ids}", f"prio-{ids}"
    cluster.create_quota(quota, namespaces=[ns], gpus=4)
    cluster.create_job(ns, "first")
    cluster.wait_phase(ns, "first", "Provisioning")
    cluster.create_job(ns, "low")
    cluster.wait_phase(ns, "low", "Queued")
    cluster.create_job(ns, "high", scheduling={"queuePriority": 10})
    cluster.wait_message(ns, "high", f"needs 4 nvidia.com/gpu, quota {quota} has 0 of 4 free; no jobs ahead")
    cluster.wait_message(ns, "low", f"needs 4 nvidia.com/gpu, quota {quota} has 0 of 4 free; 1 job ahead")
    cluster.finish(ns, "first")
    cluster.wait_phase(ns, "high", "Provisioning")
    assert cluster.job(ns, "low")["status"]["phase"] == "Queued" and cluster.no_children(ns, "low")


def test_a_job_that_never_fits_is_rejected_until_the_limit_allows_it(cluster: QuotaCluster, ids: str) -> None:
    ns, quota = f"big-{ids}", f"big-{ids}"
    cluster.create_quota(quota, namespaces=[ns], gpus=16, maxGpusPerJob=4)
    cluster.create_job(ns, "huge", trainer={"gpusPerNode": 4})  # 2 + 4 = 6 GPUs
    job = cluster.wait_phase(ns, "huge", "Failed")
    reason = f"needs 6 nvidia.com/gpu, more than quota {quota} allows per job (maxGpusPerJob: 4)"
    assert job["status"]["message"] == reason
    assert condition(job, "Admitted")["reason"] == condition(job, "Failed")["reason"] == "QuotaExceeded"
    assert "completionTime" not in job["status"] and cluster.no_children(ns, "huge")
    cluster.wait_quota(quota, rejectedJobs=1, queuedJobs=0, gpusReserved=0)
    cluster.patch_quota(quota, maxGpusPerJob=8)
    job = cluster.wait_phase(ns, "huge", "Provisioning")
    assert condition(job, "Failed")["status"] == "False" and cluster.owned(ns, "huge")


def test_a_namespace_resource_quota_is_a_limit_too(cluster: QuotaCluster, ids: str) -> None:
    ns = f"rq-{ids}"
    key = "requests.nvidia.com/gpu"
    cluster.core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "gpus"}, "spec": {"hard": {key: "6"}}}
    )
    cluster.core.patch_namespaced_resource_quota_status(  # 2 GPUs held by pods that are not NexRL's
        "gpus", ns, {"status": {"hard": {key: "6"}, "used": {key: "2"}}}
    )
    cluster.create_job(ns, "r1")
    cluster.wait_phase(ns, "r1", "Provisioning")
    cluster.create_job(ns, "r2")
    job = cluster.wait_phase(ns, "r2", "Queued")
    assert job["status"]["message"] == (
        f"needs 4 nvidia.com/gpu, ResourceQuota gpus in namespace {ns} has 0 of 6 free; no jobs ahead"
    )
    assert cluster.no_children(ns, "r2")
    cluster.core.patch_namespaced_resource_quota("gpus", ns, {"spec": {"hard": {key: "10"}}})
    cluster.wait_phase(ns, "r2", "Provisioning")


def test_suspend_gives_gpus_back_and_resume_waits_in_line(cluster: QuotaCluster, ids: str) -> None:
    ns, quota = f"pause-{ids}", f"pause-{ids}"
    cluster.create_quota(quota, namespaces=[ns], gpus=4)
    cluster.create_job(ns, "s1")
    cluster.wait_phase(ns, "s1", "Provisioning")
    cluster.create_job(ns, "s2")
    cluster.wait_phase(ns, "s2", "Queued")
    cluster.patch_spec(ns, "s1", suspend=True)
    job = cluster.wait_phase(ns, "s1", "Suspended")
    assert "admittedGpus" not in job["status"] and condition(job, "Admitted")["reason"] == "Released"
    cluster.wait_phase(ns, "s2", "Provisioning")
    cluster.patch_spec(ns, "s1", suspend=False)
    cluster.wait_phase(ns, "s1", "Queued")
    assert cluster.apps.read_namespaced_deployment("s1-inference", ns).spec.replicas == 0
    assert cluster.rayjob(ns, "s1")["spec"]["suspend"] is True


def test_a_scale_up_waits_for_gpus_and_the_job_keeps_its_replicas(cluster: QuotaCluster, ids: str) -> None:
    ns, quota = f"grow-{ids}", f"grow-{ids}"
    cluster.create_quota(quota, namespaces=[ns], gpus=8)
    cluster.create_job(ns, "g")
    cluster.create_job(ns, "other", trainer={"nodes": 0, "gpusPerNode": 0})  # 2 GPUs
    cluster.wait_phase(ns, "other", "Provisioning")
    cluster.patch_spec(ns, "g", inference={"replicas": 5})  # 5 + 2 = 7 GPUs

    def waiting() -> dict[str, Any] | None:
        cond = condition(cluster.job(ns, "g"), "SpecApplied")
        return cond if cond["reason"] == "ScaleUpWaiting" else None

    cond = wait_for(waiting, what="the scale-up to wait")
    assert cond["message"].startswith(f"scale-up needs 3 more nvidia.com/gpu, quota {quota} has 2 of 8 free")
    assert cluster.apps.read_namespaced_deployment("g-inference", ns).spec.replicas == 2
    cluster.patch_quota(quota, gpus=10)
    wait_for(
        lambda: cluster.apps.read_namespaced_deployment("g-inference", ns).spec.replicas == 5,
        what="the scale-up to be applied",
    )
    wait_for(lambda: cluster.job(ns, "g")["status"].get("admittedGpus") == 7, what="7 GPUs admitted")
    cluster.wait_quota(quota, gpusInUse=9)


def test_kueue_jobs_are_kueues_to_admit(cluster: QuotaCluster, ids: str) -> None:
    ns, quota = f"kueue-{ids}", f"kueue-{ids}"
    cluster.create_quota(quota, namespaces=[ns], gpus=0)
    cluster.create_job(ns, "k", scheduling={"queueName": "lq"})
    job = cluster.wait_phase(ns, "k", "Provisioning")  # not Failed: the NexRLQuota does not apply
    assert "admittedGpus" not in job["status"]
    template = cluster.apps.read_namespaced_deployment("k-inference", ns).spec.template.metadata
    assert template.labels["kueue.x-k8s.io/pod-group-name"] == "k-inference"
    assert template.annotations == {"kueue.x-k8s.io/pod-group-total-count": "2"}
    suspend = {"spec": {"suspend": True}}
    cluster.custom.patch_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", "k", suspend)
    cluster.wait_phase(ns, "k", "Queued")  # Kueue suspended it; the operator leaves that to Kueue
    assert cluster.rayjob(ns, "k")["spec"]["suspend"] is True


def test_metrics_show_quotas_and_waits(cluster: QuotaCluster, operator: OperatorProcess, ids: str) -> None:
    ns, quota = f"metrics-{ids}", f"metrics-{ids}"
    cluster.create_quota(quota, namespaces=[ns], gpus=4)
    cluster.create_job(ns, "m1")
    cluster.create_job(ns, "m2")
    cluster.wait_phase(ns, "m2", "Queued")

    def samples() -> dict[tuple[str, str], float]:
        with urllib.request.urlopen(operator.liveness, timeout=5) as response:
            text = response.read().decode()
        return {
            (s.name, s.labels.get("quota", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    wanted = {
        ("nexrl_quota_gpus_in_use", quota): 4.0,
        ("nexrl_quota_queued_jobs", quota): 1.0,
        ("nexrl_quota_gpus_limit", quota): 4.0,
        ("nexrl_quota_running_jobs", quota): 1.0,
    }

    def shown() -> dict[tuple[str, str], float] | None:
        found = samples()
        return found if all(found.get(k) == v for k, v in wanted.items()) else None

    found = wait_for(shown, what=f"the metrics to show {wanted}")
    assert found[("nexrl_admission_wait_seconds_count", "")] >= 1
    assert found[("nexrl_queued_jobs", "")] >= 1
