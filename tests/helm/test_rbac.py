"""The chart's RBAC is sufficient and minimal, judged by the requests the real operator makes.

Requests come from the API emulator's log (`emu.calls`) in two runs: every operator end-to-end test
(tests/e2e but the emulator's own tests; new scenarios count automatically) with the operator
serving every namespace, as recorded by the `record_calls` plugin in this session (or in a
subprocess when this session did not run them all); and a scenario here with the operator started
with the chart's own single-namespace arguments. Each request of kopf or the operator's client
must be allowed by the rendered roles and bindings of the operator's ServiceAccount, and each
granted (group, resource, verb) must be used by some request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import kubernetes
import pytest
import record_calls
from apiserver_model import Call, parse_target
from harness import EmulatorThread, OperatorProcess, wait_for
from helmchart import FULLNAME, NAMESPACE, REPO, Grant, Helm, deployment_args, find, grants
from nexrl_operator.api import GROUP, PLURAL, VERSION

from nexrl_runtime.contract import status_path

OPERATOR_AGENTS = ("kopf", "nexrl-operator")
WATCHED, OUTSIDE = "team-a", "elsewhere"
SINGLE_NAMESPACE = {"watchNamespaces": [WATCHED]}
JOB_SPEC = {"recipe": "/app/recipe/gsm8k/gsm8k.yaml", "image": "nexrl:test", "model": {"name": "m"},
            "mode": "training-service", "storage": {"size": "1Gi"},
            "inference": {"replicas": 1}, "trainer": {"nodes": 1, "gpusPerNode": 1}}
Permission = tuple[str, str, str]  # group, resource[/subresource], verb
Manifest = dict[str, Any]


def permission(call: Call) -> Permission:
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    return call.group or "", resource or "", call.verb


def operator_requests(calls: Iterable[Call]) -> list[Call]:
    return [c for c in calls if c.resource is not None and c.agent.startswith(OPERATOR_AGENTS)]


def denied(calls: Iterable[Call], granted: set[Grant]) -> set[tuple[str | None, Permission]]:
    """(namespace, permission) of the requests that no grant allows."""
    return {(c.namespace, permission(c)) for c in calls
            if not any(g.covers(c.namespace, *permission(c)) for g in granted)}


def operator_grants(manifests: list[Manifest]) -> set[Grant]:
    return grants(manifests, NAMESPACE, FULLNAME)


@pytest.fixture(scope="module")
def e2e_calls(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Call]:
    """The operator's requests in every e2e scenario (cluster-wide operator): those of this session
    when it ran all of them, else from a run of tests/e2e in a subprocess."""
    if record_calls.complete_e2e_run(request.session):
        return operator_requests(record_calls.calls())
    record = tmp_path_factory.mktemp("calls") / "calls.jsonl"
    env = {**os.environ, "NEXRL_RECORD_CALLS": str(record)}
    command = [sys.executable, "-m", "pytest", *sorted(map(str, record_calls.e2e_files())),
               "-p", "no:cacheprovider", "-q"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    tail = done.stdout[-3000:]
    assert done.returncode == 0, f"the e2e scenarios failed (their requests prove nothing):\n{tail}"
    calls = [Call(**json.loads(line)) for line in record.read_text().splitlines()]
    return operator_requests(calls)


@pytest.fixture(scope="module")
def single_namespace_calls(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> list[Call]:
    """The operator's requests when run with the chart's single-namespace arguments."""
    args = deployment_args(helm.template(SINGLE_NAMESPACE))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [a if not a.startswith("--liveness=") else f"--liveness=http://127.0.0.1:{port}/healthz"
            for a in args[1:]] + ["--status-interval=0.3"]
    with EmulatorThread() as server:
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            server.install_crd(crd)
        cluster = _Cluster(server)
        cluster.leave_orphans()  # also creates the namespace, which kopf waits for
        with OperatorProcess(server, tmp_path_factory.mktemp("operator"), *args) as operator:
            cluster.run_jobs()
            assert "Traceback" not in operator.log(), operator.log()[-3000:]
        return operator_requests(server.emu.calls)


class _Cluster:
    """A watched job adopts orphans, runs, succeeds and is deleted; a job elsewhere is ignored."""

    def __init__(self, server: EmulatorThread) -> None:
        api = server.api_client()
        self.server = server
        self.custom, self.core = kubernetes.client.CustomObjectsApi(api), kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)

    def leave_orphans(self) -> None:
        """Children of an earlier incarnation (labelled, no owner): the operator adopts them with a patch."""
        orphan = {"labels": {"nexrl.io/job": "run"}}
        self.core.create_namespaced_service(WATCHED, {"metadata": {"name": "run-inference", **orphan},
                                                      "spec": {"ports": [{"port": 8000}]}})
        self.core.create_namespaced_persistent_volume_claim(WATCHED, {
            "metadata": {"name": "run-data", **orphan},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})

    def phase(self, namespace: str = WATCHED) -> str | None:
        job = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "run")
        return (job.get("status") or {}).get("phase")

    def run_jobs(self) -> None:
        for namespace in (WATCHED, OUTSIDE):
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NexRLJob", "metadata": {"name": "run"},
                    "spec": JOB_SPEC}
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        wait_for(lambda: self.phase() == "Provisioning", what="the watched job to be provisioned")
        assert self.core.read_namespaced_service("run-inference", WATCHED).metadata.owner_references
        self.custom.patch_namespaced_custom_object_status("ray.io", "v1", WATCHED, "rayjobs", "run", {
            "status": {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}})
        wait_for(lambda: self.phase() == "Succeeded", what="the watched job to succeed")
        wait_for(lambda: self.apps.read_namespaced_deployment("run-inference", WATCHED).spec.replicas == 0,
                 what="its GPUs to be released")
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, WATCHED, PLURAL, "run")
        wait_for(lambda: not [job for job in self.server.live(GROUP, VERSION, PLURAL)
                              if job["metadata"]["namespace"] == WATCHED], what="the finalizer to be removed")
        assert self.phase(OUTSIDE) is None, "a job outside the watched namespaces was touched"


def test_e2e_requests_are_allowed_by_the_cluster_wide_chart(helm: Helm, e2e_calls: list[Call]) -> None:
    assert e2e_calls, "no operator requests recorded"
    missing = denied(e2e_calls, operator_grants(helm.template({})))
    assert not missing, f"the chart does not grant what the operator asks for: {sorted(missing, key=str)}"


def test_single_namespace_requests_are_allowed_by_the_chart(helm: Helm,
                                                            single_namespace_calls: list[Call]) -> None:
    assert {c.namespace for c in single_namespace_calls} <= {WATCHED, None}
    missing = denied(single_namespace_calls, operator_grants(helm.template(SINGLE_NAMESPACE)))
    assert not missing, f"the chart does not grant what the operator asks for: {sorted(missing, key=str)}"


@pytest.mark.parametrize("values", [{}, SINGLE_NAMESPACE], ids=["cluster-wide", "single-namespace"])
def test_every_granted_permission_is_used(helm: Helm, e2e_calls: list[Call],
                                          single_namespace_calls: list[Call], values: dict[str, Any]) -> None:
    """Both modes share the namespaced rules (test_chart), so the requests of both runs judge each."""
    used = {permission(c) for c in [*e2e_calls, *single_namespace_calls]}
    granted = {(g.group, g.resource, g.verb) for g in operator_grants(helm.template(values))}
    unused = granted - used
    assert not unused, f"granted, never used (remove it from the chart or add a scenario): {sorted(unused)}"


def _runtime_patch(namespace: str) -> Call:
    target = parse_target("PATCH", status_path(namespace, "run"), {})
    assert target is not None
    return Call.of(target, status_path(namespace, "run"), "run")


@pytest.mark.parametrize("values", [{}, SINGLE_NAMESPACE, {"runtime": {"namespaces": ["ml", "ml-dev"]}}],
                         ids=["default", "single-namespace", "runtime-namespaces"])
def test_runtime_may_patch_only_its_jobs_status(helm: Helm, values: dict[str, Any]) -> None:
    """The Ray head's progress report (nexrl_runtime.contract), and nothing else, in each job namespace."""
    manifests = helm.template(values)
    accounts = find(manifests, "ServiceAccount", "nexrl-runtime")
    namespaces = {a["metadata"]["namespace"] for a in accounts}
    assert namespaces == set(values.get("runtime", {}).get("namespaces") or values.get("watchNamespaces")
                             or [NAMESPACE])
    for namespace in namespaces:
        granted = grants(manifests, namespace, "nexrl-runtime")
        assert denied([_runtime_patch(namespace)], granted) == set()
        assert granted == {Grant(namespace, GROUP, f"{PLURAL}/status", "patch")}
