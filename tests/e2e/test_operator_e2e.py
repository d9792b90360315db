"""The real operator (a `nexrl_operator.main` process running kopf) against the emulator over HTTP.

The test plays KubeRay and the Deployment controller by writing child statuses with the real
kubernetes client, and waits on conditions (``wait_for``), never on fixed sleeps.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from apiserver_model import Fault, rbac_rules
from cluster import GROUP, PLURAL, VERSION, Cluster, condition
from harness import EmulatorThread, OperatorProcess, wait_for
from kubernetes.client.exceptions import ApiException

from nexrl_runtime.contract import config_error_patch, progress_patch

STATUS_INTERVAL = "0.3"
ALLOWED_RULES = {  # what the Helm chart's ClusterRole grants; the operator must need no more
    ("nexrl.io", "nexrljobs"): {"list", "watch", "patch"},
    ("nexrl.io", "nexrljobs/status"): {"patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "events"): {"create"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "services"): {"get", "create", "patch"},
    ("", "persistentvolumeclaims"): {"get", "create", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
    ("ray.io", "rayjobs"): {"get", "list", "watch", "create", "patch", "delete"},
    # GPU admission (docs/admin.md, GPU quotas): quotas and their status, namespace labels, ResourceQuotas
    ("nexrl.io", "nexrlquotas"): {"list", "watch"},
    ("nexrl.io", "nexrlquotas/status"): {"patch"},
    ("", "namespaces"): {"list", "watch"},
    ("", "resourcequotas"): {"list", "watch"},
}
_ids = itertools.count()


@pytest.fixture(scope="module")
def operator(server: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    workdir = tmp_path_factory.mktemp("operator")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = OperatorProcess(server, workdir, "--status-interval", STATUS_INTERVAL,
                              "--liveness", f"http://127.0.0.1:{port}/healthz",
                              "--runtime-service-account", "nexrl-runtime")
    process.liveness = f"http://127.0.0.1:{port}/healthz"
    with process:
        yield process
    log = process.log()
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture()
def ns() -> str:
    return f"e2e-{next(_ids)}"


@pytest.fixture()
def cluster(server: EmulatorThread, operator: OperatorProcess) -> Cluster:
    return Cluster(server)


def test_create_makes_owned_children_and_reports_provisioning(cluster: Cluster, ns: str) -> None:
    created = cluster.create_job(ns, "demo", mode="training-service", storage={"size": "10Gi"},
                                 trainer={"nodes": 1, "gpusPerNode": 1})  # the training service's one rank
    job = cluster.wait_phase(ns, "demo", "Provisioning")
    children = cluster.owned(ns, "demo")
    assert {kind: len(objs) for kind, objs in children.items()} == {
        "ConfigMap": 1, "Service": 2, "PersistentVolumeClaim": 1, "Deployment": 1, "StatefulSet": 1,
        "RayJob": 1}
    for obj in itertools.chain.from_iterable(children.values()):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["uid"], ref["kind"], ref["controller"]) == (created["metadata"]["uid"], "NexRLJob", True)
    status = job["status"]
    assert status["children"] == {"config": "demo-config", "storage": "demo-data", "rayjob": "demo",
                                  "inference": "demo-inference", "trainer": "demo-trainer"}
    assert status["gpus"] == 2 * 1 + 1 * 1 and status["observedGeneration"] == 1
    assert condition(job, "Valid")["status"] == "True" and condition(job, "Ready")["status"] == "False"
    assert "nexrl.io/finalizer" in job["metadata"]["finalizers"]
    # the runtime's pods run as the account that may patch nexrljobs/status (--runtime-service-account)
    (rayjob,) = children["RayJob"]
    (trainer,) = children["StatefulSet"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == "nexrl-runtime"
    assert trainer["spec"]["template"]["spec"]["serviceAccountName"] == "nexrl-runtime"
    wait_for(lambda: cluster.events(ns, "demo").count("Created") == 7, what="a Created event per child")


def test_children_statuses_drive_running_then_succeeded(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "run")
    cluster.wait_phase(ns, "run", "Provisioning")
    cluster.run_rayjob(ns, "run", "run-inference")
    job = cluster.wait_phase(ns, "run", "Running")
    assert condition(job, "Ready")["status"] == "True" and job["status"]["startTime"]
    # The runtime reports progress on the status subresource; the operator leaves those keys alone.
    cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "run",
                                                         progress_patch(12, 0.75, 3))
    cluster.run_rayjob(ns, "run", "run-inference", job="SUCCEEDED", phase="Complete")
    job = cluster.wait_phase(ns, "run", "Succeeded")
    assert condition(job, "Complete")["reason"] == "RayJobSucceeded" and job["status"]["completionTime"]
    assert (job["status"]["step"], job["status"]["reward"], job["status"]["policyVersion"]) == (12, 0.75, 3)
    wait_for(lambda: cluster.apps.read_namespaced_deployment("run-inference", ns).spec.replicas == 0,
             what="the finished job's vLLM GPUs to be released")
    # A finished job never recreates children: delete one, change the spec, and see it ignored.
    cluster.apps.delete_namespaced_deployment("run-inference", ns)
    cluster.patch_spec(ns, "run", inference={"replicas": 5})
    wait_for(lambda: "SpecIgnored" in cluster.events(ns, "run"), what="the spec change to be ignored")
    assert "Deployment" not in cluster.owned(ns, "run")
    assert cluster.job(ns, "run")["status"]["phase"] == "Succeeded"


def test_replicas_scale_the_deployment_live(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "scale")
    cluster.wait_phase(ns, "scale", "Provisioning")
    cluster.patch_spec(ns, "scale", inference={"replicas": 3})
    wait_for(lambda: cluster.apps.read_namespaced_deployment("scale-inference", ns).spec.replicas == 3,
             what="the Deployment to scale to 3")
    config = cluster.core.read_namespaced_config_map("scale-config", ns).data["cluster.yaml"]
    assert "replicas: 3" in config
    generation = cluster.job(ns, "scale")["metadata"]["generation"]
    wait_for(lambda: cluster.job(ns, "scale")["status"]["observedGeneration"] == generation)
    assert condition(cluster.job(ns, "scale"), "SpecApplied")["status"] == "True"


def test_restart_only_change_is_rejected_with_a_condition(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "shape")
    cluster.wait_phase(ns, "shape", "Provisioning")
    before = cluster.rayjob(ns, "shape")
    cluster.patch_spec(ns, "shape", model={"name": "other-model"}, trainer={"gpusPerNode": 4})

    def rejected() -> dict[str, Any] | None:
        cond = condition(cluster.job(ns, "shape"), "SpecApplied")
        return cond if cond["reason"] == "RestartRequired" else None

    cond = wait_for(rejected, what="SpecApplied=False/RestartRequired")
    assert cond["status"] == "False"
    assert "spec.model.name" in cond["message"] and "spec.trainer.gpusPerNode" in cond["message"]
    assert cluster.rayjob(ns, "shape")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_invalid_spec_fails_with_validation_failed_and_no_children(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "bad", model=None, inference={"replicas": 1})
    job = cluster.wait_phase(ns, "bad", "Failed")
    valid = condition(job, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "ValidationFailed")
    assert "spec.model" in valid["message"] and "spec.model" in job["status"]["message"]
    assert condition(job, "Failed")["reason"] == "ValidationFailed"
    assert cluster.owned(ns, "bad") == {}
    # events follow the status write that announced the phase: wait for them, do not race them
    wait_for(lambda: "ValidationFailed" in cluster.events(ns, "bad"), what="the ValidationFailed event")


def test_delete_removes_children_and_the_finalizer(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "gone")
    cluster.wait_phase(ns, "gone", "Provisioning")
    assert cluster.owned(ns, "gone")
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gone")

    def deleted() -> bool:
        try:
            cluster.job(ns, "gone")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(deleted, what="the finalizer to be removed and the job deleted")
    assert cluster.owned(ns, "gone") == {}


def test_suspend_stops_pods_and_resume_restores_them(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "pause", mode="training-service", trainer={"nodes": 1, "gpusPerNode": 1})
    cluster.wait_phase(ns, "pause", "Provisioning")
    cluster.patch_spec(ns, "pause", suspend=True)
    job = cluster.wait_phase(ns, "pause", "Suspended")
    assert condition(job, "Suspended")["status"] == "True"
    assert cluster.rayjob(ns, "pause")["spec"]["suspend"] is True
    assert cluster.apps.read_namespaced_deployment("pause-inference", ns).spec.replicas == 0
    assert cluster.apps.read_namespaced_stateful_set("pause-trainer", ns).spec.replicas == 0
    cluster.patch_spec(ns, "pause", suspend=False)
    job = cluster.wait_phase(ns, "pause", "Provisioning")
    assert condition(job, "Suspended")["status"] == "False"
    assert cluster.rayjob(ns, "pause")["spec"]["suspend"] is False
    assert cluster.apps.read_namespaced_deployment("pause-inference", ns).spec.replicas == 2
    assert cluster.apps.read_namespaced_stateful_set("pause-trainer", ns).spec.replicas == 1


def test_conflicts_on_create_are_adopted_not_duplicated(cluster: Cluster, ns: str) -> None:
    # An orphan from an earlier incarnation (labelled, no controller): adopted.
    cluster.core.create_namespaced_config_map(ns, {"metadata": {"name": "race-config",
                                                                "labels": {"nexrl.io/job": "race"}}})
    # Our own create races another writer: 409 although it got created. Then: get, own it, go on.
    race = cluster.server.emu.inject(Fault("create", "deployments", namespace=ns, status=409,
                                           reason="AlreadyExists", after=True))
    created = cluster.create_job(ns, "race")
    cluster.wait_phase(ns, "race", "Provisioning")
    assert race.hits == 1
    children = cluster.owned(ns, "race")
    assert len(children["Deployment"]) == 1 and len(children["ConfigMap"]) == 1
    (ref,) = children["ConfigMap"][0]["metadata"]["ownerReferences"]
    assert ref["uid"] == created["metadata"]["uid"]
    assert "Adopted" in cluster.events(ns, "race")


def test_someone_elses_object_is_never_touched(cluster: Cluster, ns: str) -> None:
    cluster.core.create_namespaced_service(ns, {"metadata": {"name": "mine-inference"},
                                                "spec": {"ports": [{"port": 1}]}})
    cluster.create_job(ns, "mine")

    def conflict() -> dict[str, Any] | None:
        job = cluster.job(ns, "mine")
        return job if "not ours" in job.get("status", {}).get("message", "") else None

    job = wait_for(conflict, what="a NameConflict message")
    assert job["status"]["phase"] == "Provisioning"
    service = cluster.core.read_namespaced_service("mine-inference", ns)
    assert not service.metadata.owner_references and service.spec.ports[0].port == 1
    assert cluster.events(ns, "mine").count("NameConflict") == 1  # not repeated on every retry
    cluster.core.delete_namespaced_service("mine-inference", ns)  # the owner frees the name

    def ours() -> bool:
        refs = cluster.core.read_namespaced_service("mine-inference", ns).metadata.owner_references
        return bool(refs) and refs[0].uid == job["metadata"]["uid"]

    wait_for(ours, what="the operator to create its own Service once the name is free")
    wait_for(lambda: "not ours" not in cluster.job(ns, "mine")["status"]["message"],
             what="the conflict to clear")


def test_failed_run_restarts_up_to_max_restarts(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "flaky", maxRestarts=1)
    cluster.wait_phase(ns, "flaky", "Provisioning")
    first = cluster.rayjob(ns, "flaky")["metadata"]["uid"]
    cluster.run_rayjob(ns, "flaky", "flaky-inference", job="FAILED", phase="Failed")
    second = wait_for(lambda: (uid := cluster.rayjob(ns, "flaky")["metadata"]["uid"]) != first and uid,
                      what="the RayJob to be re-created")
    assert cluster.job(ns, "flaky")["status"]["restarts"] == 1
    cluster.run_rayjob(ns, "flaky", "flaky-inference", job="FAILED", phase="Failed")
    job = cluster.wait_phase(ns, "flaky", "Failed")
    assert condition(job, "Failed")["reason"] == "RayJobFailed"
    assert cluster.rayjob(ns, "flaky")["metadata"]["uid"] == second


def test_a_config_the_runtime_refused_fails_the_job_without_a_restart(cluster: Cluster, ns: str) -> None:
    cluster.create_job(ns, "badcfg", maxRestarts=2)
    cluster.wait_phase(ns, "badcfg", "Provisioning")
    first = cluster.rayjob(ns, "badcfg")["metadata"]["uid"]
    # What `nexrl run` writes before it exits 2 (nexrl_runtime.reporting.report_config_error), then
    # KubeRay's view of the exit.
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, "badcfg", config_error_patch("trainer.bogus: unknown field"))
    cluster.run_rayjob(ns, "badcfg", "badcfg-inference", job="FAILED", phase="Failed")
    job = cluster.wait_phase(ns, "badcfg", "Failed")
    assert condition(job, "Failed")["reason"] == "ValidationFailed"
    assert job["status"]["message"] == "the runtime refused the config: trainer.bogus: unknown field"
    assert condition(job, "Valid")["status"] == "False" and job["status"]["restarts"] == 0
    wait_for(lambda: cluster.apps.read_namespaced_deployment("badcfg-inference", ns).spec.replicas == 0,
             what="the refused job's vLLM GPUs to be released")
    assert cluster.rayjob(ns, "badcfg")["metadata"]["uid"] == first  # not re-run with the same config


def test_operator_restart_mid_creation_makes_no_duplicates(cluster: Cluster, operator: OperatorProcess,
                                                           ns: str) -> None:
    start = len(cluster.server.emu.calls)
    # The RayJob create fails, so the create handler stops half-way; the operator dies before its retry.
    cluster.server.emu.inject(Fault("create", "rayjobs", namespace=ns, status=500, times=100))
    cluster.create_job(ns, "crash")
    calls = cluster.server.emu.calls
    wait_for(lambda: any(c.resource == "rayjobs" and c.status == 500 for c in calls[start:]),
             what="the half-done create")
    operator.stop(kill=True)
    cluster.server.emu.faults.clear()
    cluster.create_job(ns, "offline")  # created while no operator runs
    operator.start()
    cluster.wait_phase(ns, "crash", "Provisioning")
    cluster.wait_phase(ns, "offline", "Provisioning")
    for name in ("crash", "offline"):
        counts = {kind: len(objs) for kind, objs in cluster.owned(ns, name).items()}
        assert counts == {"ConfigMap": 1, "Service": 1, "Deployment": 1, "RayJob": 1}, (name, counts)
    assert cluster.creates(ns, start) == {"nexrljobs": 2, "configmaps": 2, "services": 2, "deployments": 2,
                                          "rayjobs": 2}
    log = pathlib.Path(operator.log_path).read_text()
    assert "Traceback" not in log.split("Starting Kopf")[-1], json.dumps(log[-3000:])


def test_liveness_endpoint_answers(operator: OperatorProcess) -> None:
    with urllib.request.urlopen(operator.liveness, timeout=5) as response:
        assert response.status == 200


def test_operator_uses_only_the_permissions_the_chart_grants(cluster: Cluster) -> None:
    used = rbac_rules(cluster.server.emu.calls, ("kopf", "nexrl-operator"))
    extra = {rule: verbs - ALLOWED_RULES.get(rule, set()) for rule, verbs in used.items()}
    assert {rule: verbs for rule, verbs in extra.items() if verbs} == {}


def test_children_are_watched_with_a_server_side_label_selector(cluster: Cluster) -> None:
    reads = [(c.resource, c.selector) for c in cluster.server.emu.calls
             if c.verb in ("list", "watch") and c.resource in ("rayjobs", "deployments", "statefulsets")]
    assert reads and all(selector == "nexrl.io/job" for _, selector in reads), reads
