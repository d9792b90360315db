"""The test's view of the cluster in operator end-to-end tests: jobs, children, and what controllers write."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes
from harness import EmulatorThread, wait_for

GROUP, VERSION, PLURAL = "nexrl.io", "v1alpha1", "nexrljobs"


class Cluster:
    """The test's view of the cluster: jobs, children, and the statuses controllers would write."""

    def __init__(self, server: EmulatorThread) -> None:
        self.server = server
        api = server.api_client()
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)

    def create_job(self, ns: str, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NexRLJob",
            "metadata": {"name": name},
            "spec": _merge(BASE_SPEC, spec),
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def job(self, ns: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def patch_spec(self, ns: str, name: str, **spec: Any) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": spec})

    def wait_phase(self, ns: str, name: str, phase: str, timeout: float = 10) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(ns, name)
            return job if job.get("status", {}).get("phase") == phase else None

        return wait_for(reached, timeout, what=f"{ns}/{name} to be {phase}")

    def rayjob(self, ns: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name)

    def run_rayjob(
        self, ns: str, name: str, deployment: str, job: str = "RUNNING", phase: str = "Running"
    ) -> None:
        """Play KubeRay and the Deployment controller: the job runs and every vLLM replica is ready."""
        self.custom.patch_namespaced_custom_object_status(
            "ray.io", "v1", ns, "rayjobs", name, {"status": {"jobStatus": job, "jobDeploymentStatus": phase}}
        )
        replicas = self.apps.read_namespaced_deployment(deployment, ns).spec.replicas
        self.apps.patch_namespaced_deployment_status(
            deployment, ns, {"status": {"replicas": replicas, "readyReplicas": replicas}}
        )

    def owned(self, ns: str, name: str) -> dict[str, list[dict[str, Any]]]:
        """Kind -> the live objects labelled for this job."""
        out: dict[str, list[dict[str, Any]]] = {}
        for group, version, plural in KINDS:
            for obj in self.server.live(group, version, plural):
                meta = obj["metadata"]
                if meta.get("namespace") == ns and (meta.get("labels") or {}).get("nexrl.io/job") == name:
                    out.setdefault(obj["kind"], []).append(obj)
        return out

    def events(self, ns: str, name: str) -> list[str]:
        return [
            e["reason"]
            for e in self.server.live("", "v1", "events")
            if e["metadata"]["namespace"] == ns and e["involvedObject"]["name"] == name
        ]

    def creates(self, ns: str, since: int = 0) -> dict[str, int]:
        """Successful creates per resource in a namespace (duplicates would show as 409s or extra 201s)."""
        counts: dict[str, int] = {}
        for call in self.server.emu.calls[since:]:
            if (call.verb, call.namespace, call.status) == ("create", ns, 201) and call.resource != "events":
                counts[call.resource or ""] = counts.get(call.resource or "", 0) + 1
        return counts


BASE_SPEC: dict[str, Any] = {
    "recipe": "/app/recipe/gsm8k/gsm8k.yaml",
    "image": "nexrl:test",
    "model": {"name": "tiny-model"},
    "inference": {"replicas": 2, "gpusPerReplica": 1},
    "trainer": {"nodes": 1, "gpusPerNode": 2},
}
KINDS = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("", "v1", "persistentvolumeclaims"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("ray.io", "v1", "rayjobs"),
)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def condition(job: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in job["status"]["conditions"] if c["type"] == type_)
