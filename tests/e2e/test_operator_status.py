"""What users and admins read from the operator: columns, conditions, Events and the operator's log.

The real operator process against the emulator; the test plays KubeRay, the Deployment controller
and Kueue by writing what they would write. Jobs of BASE_SPEC ask for 4 GPUs (2 vLLM x 1 + 1
trainer x 2).
"""

from __future__ import annotations

import collections
import itertools
import re
import urllib.request
from collections.abc import Iterator

import pytest
from cluster import Cluster, condition
from harness import EmulatorThread, OperatorProcess, free_port, wait_for

STATUS_INTERVAL = 0.3
_ids = itertools.count()


@pytest.fixture(scope="module")
def operator(server: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    port = free_port()
    process = OperatorProcess(server, tmp_path_factory.mktemp("operator"), "--status-interval",
                              str(STATUS_INTERVAL), "--metrics-port", str(port),
                              "--metrics-address", "127.0.0.1")
    process.metrics = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    with process:
        yield process
    assert "Traceback" not in process.log(), process.log()[-5000:]


@pytest.fixture()
def ns() -> str:
    return f"status-{next(_ids)}"


@pytest.fixture()
def cluster(server: EmulatorThread, operator: OperatorProcess) -> Cluster:
    return Cluster(server)


def wait_condition(cluster: Cluster, ns: str, name: str, type_: str, **expected: str) -> dict:
    def reached() -> dict | None:
        cond = next((c for c in cluster.job(ns, name).get("status", {}).get("conditions") or []
                     if c["type"] == type_), None)
        return cond if cond and all(cond.get(k) == v for k, v in expected.items()) else None

    try:
        return wait_for(reached, what=f"{ns}/{name}: {type_} {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the job's status: {cluster.job(ns, name).get('status')}") from None


def test_held_gpus_drop_to_zero_when_the_job_finishes(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "done")
    cluster.wait_phase(ns, "done", "Provisioning")
    cluster.run_rayjob(ns, "done", "done-inference")
    job = cluster.wait_phase(ns, "done", "Running")
    assert (job["status"]["gpus"], job["status"]["heldGpus"]) == (4, 4)
    cluster.run_rayjob(ns, "done", "done-inference", job="SUCCEEDED", phase="Complete")
    job = cluster.wait_phase(ns, "done", "Succeeded")
    assert (job["status"]["gpus"], job["status"]["heldGpus"]) == (4, 0)


def test_a_scale_up_keeps_a_running_job_running(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "grow")
    cluster.wait_phase(ns, "grow", "Provisioning")
    cluster.run_rayjob(ns, "grow", "grow-inference")
    cluster.wait_phase(ns, "grow", "Running")
    cluster.patch_spec(ns, "grow", inference={"replicas": 3})
    scaling = wait_condition(cluster, ns, "grow", "ScalingUp", status="True")
    assert scaling["message"] == "inference 2 -> 3 replicas, 2 ready"
    job = cluster.job(ns, "grow")
    assert job["status"]["phase"] == "Running" and condition(job, "Ready")["status"] == "True"
    assert cluster.apps.read_namespaced_deployment("grow-inference", ns).spec.replicas == 3
    cluster.run_rayjob(ns, "grow", "grow-inference")  # the third replica is ready
    wait_condition(cluster, ns, "grow", "ScalingUp", status="False")
    job = cluster.job(ns, "grow")
    assert (job["status"]["phase"], job["status"]["inferenceReplicas"]) == ("Running", 3)
    assert job["status"]["heldGpus"] == job["status"]["gpus"] == 5
    assert cluster.events(ns, "grow").count("ScalingUp") == 1
    assert cluster.events(ns, "grow").count("Provisioning") == 1  # never went back to it


def kueue_sets(cluster: Cluster, ns: str, name: str, suspend: bool) -> None:
    """Play Kueue: it owns the RayJob's spec.suspend (suspended until its LocalQueue admits the job)."""
    body = {"spec": {"suspend": suspend}}
    cluster.custom.patch_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name, body)


def test_a_kueue_job_says_kueue_admits_it(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "kq", scheduling={"queueName": "team-a"})
    wait_for(lambda: cluster.rayjob(ns, "kq"), what="the RayJob")
    # Kueue: its webhook suspends the RayJob until its LocalQueue admits it
    kueue_sets(cluster, ns, "kq", suspend=True)
    waiting = wait_condition(cluster, ns, "kq", "Admitted", status="False", reason="Kueue")
    assert "Kueue's LocalQueue team-a admits the job" in waiting["message"]
    job = cluster.wait_phase(ns, "kq", "Queued")
    assert job["status"]["heldGpus"] == 0
    kueue_sets(cluster, ns, "kq", suspend=False)
    cluster.run_rayjob(ns, "kq", "kq-inference")
    admitted = wait_condition(cluster, ns, "kq", "Admitted", status="True", reason="Kueue")
    assert "team-a" in admitted["message"]
    job = cluster.wait_phase(ns, "kq", "Running")
    assert job["status"]["heldGpus"] == 4
    assert cluster.rayjob(ns, "kq")["spec"]["suspend"] is False  # Kueue's field: never written by us


def claim_lookups(cluster: Cluster, ns: str) -> int:
    """GETs of PersistentVolumeClaims in ``ns`` so far (the operator looks on every refresh while missing)."""
    return sum(1 for c in list(cluster.server.emu.calls)
               if c.verb == "get" and c.resource == "persistentvolumeclaims" and c.namespace == ns)


def test_a_missing_existing_claim_is_reported_once(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "pvc", storage={"existingClaim": "shared-data"})
    storage = wait_condition(cluster, ns, "pvc", "StorageReady", status="False", reason="ClaimNotFound")
    assert "PersistentVolumeClaim shared-data" in storage["message"]
    wait_for(lambda: "ClaimNotFound" in cluster.events(ns, "pvc"), what="a ClaimNotFound Event")
    looks = claim_lookups(cluster, ns)
    wait_for(lambda: claim_lookups(cluster, ns) >= looks + 5, timeout=20,
             what="five more status refreshes, each looking for the claim again")
    assert cluster.events(ns, "pvc").count("ClaimNotFound") == 1
    assert "PersistentVolumeClaim shared-data to exist" in cluster.job(ns, "pvc")["status"]["message"]
    cluster.core.create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": "shared-data"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    wait_condition(cluster, ns, "pvc", "StorageReady", status="True", reason="ClaimFound")


def status_ticks(operator: OperatorProcess) -> float:
    """Runs of the status timer so far, from the operator's own /metrics."""
    text = urllib.request.urlopen(operator.metrics, timeout=5).read().decode()  # type: ignore[attr-defined]
    found = re.search(r'^nexrl_handler_runs_total\{handler="status"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_log_says_what_was_done_to_which_job_once(cluster: Cluster, operator: OperatorProcess,
                                                       ns: str) -> None:
    start = len(operator.log())
    cluster.create_job(ns, "quiet")
    cluster.wait_phase(ns, "quiet", "Provisioning")
    cluster.run_rayjob(ns, "quiet", "quiet-inference")
    cluster.wait_phase(ns, "quiet", "Running")
    ticks = status_ticks(operator)
    jobs = len(cluster.server.live("nexrl.io", "v1alpha1", "nexrljobs"))  # each has its own timer
    wait_for(lambda: status_ticks(operator) >= ticks + 8 * jobs, timeout=30,
             what="eight status intervals with nothing to do")
    lines = operator.log()[start:].splitlines()
    assert not [line for line in lines if "succeeded." in line and "kopf.objects" in line], lines
    bodies = [re.sub(r"^\[[^]]*\] ", "", line) for line in lines]  # without the timestamp
    repeated = {body: n for body, n in collections.Counter(bodies).items() if n > 1}
    assert repeated == {}, repeated
    ours = [line for line in lines if "nexrl_operator" in line or "kopf.objects" in line]
    assert ours and all(f"{ns}/quiet" in line for line in ours), lines
    assert any(line.endswith(f"{ns}/quiet: created RayJob quiet") for line in lines), lines
    assert any(f"{ns}/quiet: Running: " in line for line in lines), lines
