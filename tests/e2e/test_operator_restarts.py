"""Operator restarts (SIGKILL and SIGTERM) at each point of a job's life, against the emulator.

What must hold whatever order the resume handler, the status timer and the watch events run in
after a restart: a finished job's workloads are at zero replicas and never gain any again (checked
on every state the emulator stored, not only the last), no Event is sent twice, and every Event
says what was done (``action``) and by whom (``reportingComponent``, ``source``). Also here: a job
repaired after a failed validation loses its ``completionTime``, and a job whose quota limit was
lowered while it was suspended says so when it is rejected on resume.

The test plays KubeRay and the Deployment controller (child statuses written with the real
kubernetes client) and waits on conditions (``wait_for``), never on fixed sleeps.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import GROUP, PLURAL, VERSION, Cluster, condition
from harness import EmulatorThread, OperatorProcess, wait_for

STATUS_INTERVAL = "0.2"
PHASES = {"Pending", "Queued", "Provisioning", "Running", "Suspended", "Succeeded", "Failed"}
NOT_FINAL = {"ValidationFailed", "QuotaExceeded"}
"""Reasons of a Failed phase that a new spec (or a quota) can still undo."""
TRAINING_SERVICE: dict[str, Any] = {"mode": "training-service", "trainer": {"nodes": 1, "gpusPerNode": 1}}
WORKLOAD_PLURALS = (("apps", "v1", "deployments"), ("apps", "v1", "statefulsets"))
_ids = itertools.count()


@pytest.fixture(scope="module")
def operator(server: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # -v: kopf's log names the object of each handler run (``resumes`` counts them)
    workdir = tmp_path_factory.mktemp("operator")
    process = OperatorProcess(server, workdir, "--status-interval", STATUS_INTERVAL, "-v")
    with process:
        yield process
    assert "Traceback" not in process.log(), process.log()[-5000:]


@pytest.fixture()
def ns() -> str:
    return f"restart-{next(_ids)}"


@pytest.fixture()
def cluster(server: EmulatorThread, operator: OperatorProcess) -> Cluster:
    return Cluster(server)


# --- what must hold -------------------------------------------------------------------------------


def finished_at(server: EmulatorThread, ns: str) -> dict[str, int]:
    """job name -> the resourceVersion at which its stored status first said it had finished for good."""
    out: dict[str, int] = {}
    for rv, _, job in server.writes(GROUP, VERSION, PLURAL):
        meta, status = job["metadata"], job.get("status") or {}
        final = status.get("phase") in ("Succeeded", "Failed")
        if meta.get("namespace") != ns or meta["name"] in out or not final:
            continue
        reason = next((c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Failed"),
                      None)
        if status["phase"] == "Succeeded" or reason not in NOT_FINAL:
            out[meta["name"]] = rv
    return out


def replica_gains(server: EmulatorThread, ns: str) -> list[str]:
    """Writes that raised a workload's replicas after its job had finished (from the emulator's write log)."""
    finished = finished_at(server, ns)
    gains = []
    for plural in WORKLOAD_PLURALS:
        last: dict[str, int] = {}
        for rv, _, obj in server.writes(*plural):
            meta = obj["metadata"]
            if meta.get("namespace") != ns:
                continue
            job, replicas = (meta.get("labels") or {}).get("nexrl.io/job"), obj["spec"].get("replicas") or 0
            before, last[meta["name"]] = last.get(meta["name"], 0), replicas
            if job in finished and rv > finished[job] and replicas > before:
                gains.append(f"{obj['kind']} {meta['name']}: {before} -> {replicas} at rv {rv} "
                             f"(job {job} finished at rv {finished[job]})")
    return gains


def events(server: EmulatorThread, ns: str) -> list[dict[str, Any]]:
    """The Events of a namespace in the order they were created."""
    found = [e for e in server.live("", "v1", "events") if e["metadata"]["namespace"] == ns]
    return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))


def duplicate_events(server: EmulatorThread, ns: str) -> list[str]:
    """Events sent twice for one object: the same phase announced again with no other phase in
    between, or any other Event with the same reason and message."""
    phases: dict[str, str] = {}
    seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
    dupes = []
    for event in events(server, ns):
        obj = f"{event['involvedObject']['kind']} {event['involvedObject']['name']}"
        key = (obj, event["reason"], event["message"])
        if event["reason"] in PHASES:
            if phases.get(obj) == event["reason"]:
                dupes.append(" / ".join(key))
            phases[obj] = event["reason"]
        else:
            seen[key] += 1
            if seen[key] == 2:
                dupes.append(" / ".join(key))
    return dupes


def check(server: EmulatorThread, ns: str) -> None:
    """The invariants of this module, over everything the namespace saw so far."""
    assert replica_gains(server, ns) == []
    assert duplicate_events(server, ns) == []
    for event in events(server, ns):
        assert event.get("action") and event["action"] != "Action?", event
        assert event.get("reportingComponent") == "nexrl-operator" and event.get("reportingInstance"), event
        assert event["source"]["component"] == "nexrl-operator", event


def replicas(cluster: Cluster, ns: str, name: str) -> dict[str, int]:
    """kind -> spec.replicas of a job's Deployment and StatefulSet."""
    return {kind: objs[0]["spec"]["replicas"] for kind, objs in cluster.owned(ns, name).items()
            if kind in ("Deployment", "StatefulSet")}


def wait_released(cluster: Cluster, ns: str, *names: str) -> None:
    for name in names:
        wait_for(lambda name=name: set(replicas(cluster, ns, name).values()) == {0},
                 what=f"{name}'s workloads at 0 replicas; they are at {replicas(cluster, ns, name)}")


def resumes(operator: OperatorProcess, ns: str, name: str) -> int:
    """How often the operator's log says the resume handler of a job has run to the end."""
    return sum(1 for line in operator.log().splitlines()
               if f"[{ns}/{name}]" in line and "Handler 'resume' succeeded" in line)


def restart(operator: OperatorProcess, kill: bool) -> None:
    operator.stop(kill=kill)
    operator.start()


def start_running(cluster: Cluster, ns: str, name: str, **spec: Any) -> None:
    cluster.create_job(ns, name, **spec)
    cluster.wait_phase(ns, name, "Provisioning")
    cluster.run_rayjob(ns, name, f"{name}-inference")
    if spec.get("mode") == "training-service":
        cluster.apps.patch_namespaced_stateful_set_status(f"{name}-trainer", ns,
                                                          {"status": {"replicas": 1, "readyReplicas": 1}})
    cluster.wait_phase(ns, name, "Running")


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kill", [True, False], ids=["SIGKILL", "SIGTERM"])
def test_restarts_never_bring_back_a_finished_jobs_pods(cluster: Cluster, operator: OperatorProcess, ns: str,
                                                        kill: bool) -> None:
    server = cluster.server
    finishing = ["sh-1", "sh-2", "ts-1", "ts-2"]  # several, so that both orders of resume and timer occur
    for name in finishing:
        start_running(cluster, ns, name, **(TRAINING_SERVICE if name.startswith("ts") else {}))
    start_running(cluster, ns, "broken", maxRestarts=0, **TRAINING_SERVICE)
    start_running(cluster, ns, "early")  # still running when the operator dies; finishes after
    cluster.create_job(ns, "paused", **TRAINING_SERVICE)
    cluster.wait_phase(ns, "paused", "Provisioning")

    cluster.patch_spec(ns, "paused", suspend=True)  # the operator dies mid-suspend
    operator.stop(kill=kill)
    for name in finishing:  # the jobs finish while no operator runs
        cluster.run_rayjob(ns, name, f"{name}-inference", job="SUCCEEDED", phase="Complete")
    cluster.run_rayjob(ns, "broken", "broken-inference", job="FAILED", phase="Failed")
    operator.start()

    for name in finishing:
        job = cluster.wait_phase(ns, name, "Succeeded")
        assert condition(job, "Complete")["reason"] == "RayJobSucceeded" and job["status"]["completionTime"]
    assert condition(cluster.wait_phase(ns, "broken", "Failed"), "Failed")["reason"] == "RayJobFailed"
    cluster.wait_phase(ns, "paused", "Suspended")
    wait_released(cluster, ns, *finishing, "broken", "paused")
    assert replicas(cluster, ns, "early") == {"Deployment": 2}
    cluster.run_rayjob(ns, "early", "early-inference", job="SUCCEEDED", phase="Complete")
    cluster.wait_phase(ns, "early", "Succeeded")
    wait_released(cluster, ns, "early")
    check(server, ns)

    # Further restarts find every job finished (or suspended) and change nothing.
    names = [*finishing, "broken", "early", "paused"]
    for _ in range(2):
        before = {name: resumes(operator, ns, name) for name in names}
        restart(operator, kill)
        for name in names:
            wait_for(lambda name=name, seen=before[name]: resumes(operator, ns, name) > seen,
                     what=f"{name} resumed")
        wait_released(cluster, ns, *names)
    check(server, ns)
    for name in finishing:
        assert [e["reason"] for e in events(server, ns) if e["involvedObject"]["name"] == name].count(
            "Succeeded") == 1


def test_finished_jobs_workloads_scaled_up_by_hand_go_back_to_zero(cluster: Cluster, ns: str) -> None:
    """The release is a state the status timer keeps, not a one-off on the transition."""
    start_running(cluster, ns, "done", **TRAINING_SERVICE)
    cluster.run_rayjob(ns, "done", "done-inference", job="SUCCEEDED", phase="Complete")
    cluster.wait_phase(ns, "done", "Succeeded")
    wait_released(cluster, ns, "done")
    cluster.apps.patch_namespaced_deployment("done-inference", ns, {"spec": {"replicas": 2}})
    wait_released(cluster, ns, "done")
    assert cluster.job(ns, "done")["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize("kill", [True, False], ids=["SIGKILL", "SIGTERM"])
def test_repaired_job_loses_its_completion_time(cluster: Cluster, operator: OperatorProcess, ns: str,
                                                kill: bool) -> None:
    cluster.create_job(ns, "fixme", model=None)
    job = cluster.wait_phase(ns, "fixme", "Failed")
    assert condition(job, "Valid")["reason"] == "ValidationFailed"
    assert "completionTime" not in job["status"]  # not finished: a new spec may fix it
    restart(operator, kill)
    cluster.patch_spec(ns, "fixme", model={"name": "tiny-model"})
    job = cluster.wait_phase(ns, "fixme", "Provisioning")
    assert "completionTime" not in job["status"] and condition(job, "Valid")["status"] == "True"
    cluster.run_rayjob(ns, "fixme", "fixme-inference")
    job = cluster.wait_phase(ns, "fixme", "Running")
    assert job["status"]["startTime"] and "completionTime" not in job["status"]
    cluster.run_rayjob(ns, "fixme", "fixme-inference", job="SUCCEEDED", phase="Complete")
    job = cluster.wait_phase(ns, "fixme", "Succeeded")
    assert job["status"]["completionTime"] >= job["status"]["startTime"]
    check(cluster.server, ns)


def test_suspend_and_resume_emit_each_event_once(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "nap", **TRAINING_SERVICE)
    cluster.wait_phase(ns, "nap", "Provisioning")
    cluster.patch_spec(ns, "nap", suspend=True)
    cluster.wait_phase(ns, "nap", "Suspended")
    wait_released(cluster, ns, "nap")
    cluster.patch_spec(ns, "nap", suspend=False)
    cluster.wait_phase(ns, "nap", "Provisioning")
    wait_for(lambda: replicas(cluster, ns, "nap") == {"Deployment": 2, "StatefulSet": 1}, what="pods back")
    cluster.run_rayjob(ns, "nap", "nap-inference")
    cluster.apps.patch_namespaced_stateful_set_status("nap-trainer", ns, {"status": {"replicas": 1,
                                                                                   "readyReplicas": 1}})
    cluster.wait_phase(ns, "nap", "Running")
    check(cluster.server, ns)
    reasons = [e["reason"] for e in events(cluster.server, ns) if e["reason"] in PHASES]
    assert reasons == ["Provisioning", "Suspended", "Provisioning", "Running"]
    actions = {e["reason"]: e["action"] for e in events(cluster.server, ns)}
    assert actions["Created"] == "Create" and actions["Suspended"] == "Suspend"


class QuotaCluster(Cluster):
    def create_quota(self, name: str, **spec: Any) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NexRLQuota", "metadata": {"name": name},
                "spec": spec}
        self.custom.create_cluster_custom_object(GROUP, VERSION, "nexrlquotas", body)

    def quota(self, name: str) -> dict[str, Any]:
        return self.custom.get_cluster_custom_object(GROUP, VERSION, "nexrlquotas", name).get("status") or {}

    def patch_quota(self, name: str, **spec: Any) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "nexrlquotas", name, {"spec": spec})


@pytest.mark.parametrize("before_quota", [False, True], ids=["admitted", "started-before-the-quota"])
def test_resume_after_the_per_job_limit_was_lowered_says_what_changed(server: EmulatorThread,
                                                                      operator: OperatorProcess, ns: str,
                                                                      before_quota: bool) -> None:
    cluster = QuotaCluster(server)
    quota = f"q-{ns}"
    if not before_quota:
        cluster.create_quota(quota, namespaces=[ns], gpus=16, maxGpusPerJob=8)
    cluster.create_job(ns, "big")  # 4 GPUs
    job = cluster.wait_phase(ns, "big", "Provisioning")
    assert job["status"]["admittedGpus"] == 4
    if before_quota:  # a lower limit never stops a running job
        cluster.run_rayjob(ns, "big", "big-inference")
        cluster.wait_phase(ns, "big", "Running")
        cluster.create_quota(quota, namespaces=[ns], gpus=16, maxGpusPerJob=2)
        wait_for(lambda: cluster.quota(quota).get("gpusInUse") == 4, what="the quota to count the job")
        assert cluster.job(ns, "big")["status"]["phase"] == "Running"
    cluster.patch_spec(ns, "big", suspend=True)
    cluster.wait_phase(ns, "big", "Suspended")
    cluster.patch_quota(quota, maxGpusPerJob=2)
    cluster.patch_spec(ns, "big", suspend=False)
    job = cluster.wait_phase(ns, "big", "Failed")
    admitted = condition(job, "Admitted")
    assert admitted["reason"] == "QuotaExceeded" and admitted["status"] == "False"
    message = job["status"]["message"]
    assert "maxGpusPerJob: 2" in message and "lowered" in message and "suspended" in message, message
    assert admitted["message"] == message
    assert set(replicas(cluster, ns, "big").values()) == {0}
    cluster.patch_quota(quota, maxGpusPerJob=4)  # the admin raises it again: the job comes back
    wait_for(lambda: cluster.job(ns, "big")["status"].get("admittedGpus") == 4, what="the job admitted again")
    wait_for(lambda: replicas(cluster, ns, "big") == {"Deployment": 2}, what="pods back")
    wait_for(lambda: cluster.job(ns, "big")["status"]["phase"] in ("Provisioning", "Running"),
             what="the job's phase to leave Failed (the status refresh after the admission)")
    check(server, ns)
