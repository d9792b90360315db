"""KubeRay's part in the box, done as KubeRay does it: per RayJob a RayCluster (`<rayjob>-<5 chars>`)
and its headless head Service `<cluster>-head-svc`; the head pod runs `ray start --head`, the worker
pods (started once the head's GCS answers, as KubeRay's wait-gcs-ready init container does)
`ray start --address=<head-svc>:6379`, each with --num-cpus/--memory/--num-gpus from its limits; when
every pod is ready, a submitter pod runs `ray job submit --address http://<head-svc>:8265
--submission-id <jobId> -- <entrypoint>`, and the job's status from the dashboard's job API becomes
the RayJob's `status.jobStatus` / `jobDeploymentStatus` (Initializing, Running, Complete, Failed).
With `shutdownAfterJobFinishes` the RayCluster goes when the job ends.
"""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import socket
import time
import urllib.request
from typing import Any

import podspec
from kubelet import Node, Pod, http_ok, pod_manifest
from podspec import Manifest

log = logging.getLogger("box.kuberay")
TERMINAL = {"SUCCEEDED": "Complete", "FAILED": "Failed", "STOPPED": "Failed"}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RayJobRun:
    """One RayJob's cluster and submission."""

    def __init__(self, obj: Manifest) -> None:
        meta = obj["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.spec: Manifest = obj["spec"]
        self.cluster = f"{self.name}-{secrets.token_hex(3)[:5]}"
        self.job_id = f"{self.name}-{secrets.token_hex(3)[:5]}"
        self.head: Pod | None = None
        self.workers: list[Pod] = []
        self.submitter: Pod | None = None
        self.job_status = ""
        self.done = False
        self.refused = ""
        """why the head pod cannot be made (e.g. a missing service account), once said"""

    @property
    def head_svc(self) -> str:
        return f"{self.cluster}-head-svc.{self.namespace}.svc.{podspec.DOMAIN}"

    def pods(self) -> list[Pod]:
        return [p for p in (self.head, *self.workers, self.submitter) if p is not None]


class KubeRay:
    """Reconciles RayJobs; `api` is a small facade over the API client (see box.Api)."""

    def __init__(self, node: Node, api: Any) -> None:
        self.node, self.api = node, api
        self.runs: dict[tuple[str, str], RayJobRun] = {}
        self.history: list[tuple[str, str, str]] = []
        """(rayjob, jobDeploymentStatus, jobStatus) in the order they were written"""

    def tick(self, rayjobs: list[Manifest]) -> None:
        live = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in rayjobs
            if not o["metadata"].get("deletionTimestamp")
        }
        for key, run in list(self.runs.items()):
            obj = live.get(key)
            if obj is None or obj["metadata"]["uid"] != run.uid:
                self._teardown(run, delete_objects=False)  # the RayJob is gone: GC takes the rest
                del self.runs[key]
        for key, obj in live.items():
            status = obj.get("status") or {}
            run = self.runs.get(key)
            if run is None:
                if obj["spec"].get("suspend") or status.get("jobDeploymentStatus") in ("Complete", "Failed"):
                    continue
                run = self.runs[key] = RayJobRun(obj)
                self._create(run, obj)
            elif obj["spec"].get("suspend") and not run.done:
                self._teardown(run, delete_objects=True)
                self._status(run, {"jobDeploymentStatus": "Suspended"})
                del self.runs[key]
                continue
            if not run.done:
                self._step(run)

    def _create(self, run: RayJobRun, obj: Manifest) -> None:
        owner = {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "name": run.name,
            "uid": run.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        labels = {"ray.io/cluster": run.cluster, "ray.io/originated-from-crd": "RayJob"}
        self.api.create(
            "ray.io",
            "v1",
            "rayclusters",
            run.namespace,
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "metadata": {
                    "name": run.cluster,
                    "namespace": run.namespace,
                    "labels": labels,
                    "ownerReferences": [owner],
                },
                "spec": run.spec["rayClusterSpec"],
            },
        )
        self.api.create(
            "",
            "v1",
            "services",
            run.namespace,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": f"{run.cluster}-head-svc",
                    "namespace": run.namespace,
                    "labels": labels,
                    "ownerReferences": [
                        {
                            **owner,
                            "apiVersion": "ray.io/v1",
                            "kind": "RayCluster",
                            "name": run.cluster,
                            "uid": self.api.uid("ray.io", "v1", "rayclusters", run.namespace, run.cluster),
                        }
                    ],
                },
                "spec": {
                    "clusterIP": "None",
                    "selector": {"ray.io/cluster": run.cluster, "ray.io/node-type": "head"},
                    "ports": [
                        {"name": "gcs", "port": 6379},
                        {"name": "dashboard", "port": 8265},
                        {"name": "client", "port": 10001},
                    ],
                },
            },
        )
        self._status(
            run,
            {
                "jobDeploymentStatus": "Initializing",
                "jobStatus": "",
                "jobId": run.job_id,
                "rayClusterName": run.cluster,
                "startTime": now(),
                "dashboardURL": f"{run.head_svc}:8265",
                "observedGeneration": obj["metadata"].get("generation", 1),
            },
        )

    def _ray_pod(self, run: RayJobRun, group: Manifest, node_type: str, group_name: str, name: str) -> Pod:
        labels = {
            "ray.io/cluster": run.cluster,
            "ray.io/node-type": node_type,
            "ray.io/group": group_name,
            "ray.io/is-ray-node": "yes",
        }
        manifest = pod_manifest(group["template"], name, run.namespace, labels)
        spec = manifest["spec"]
        containers = [dict(c) for c in spec["containers"]]
        ray = containers[0]
        start = podspec.ray_start_args(
            ray,
            group.get("rayStartParams") or {},
            node_type == "head",
            f"{run.head_svc}:6379",
            "$(MY_POD_IP)",
        )
        # as KubeRay: a shell that raises the file limit, then ray start ($(MY_POD_IP) is expanded by kubelet)
        ray["command"] = ["bash", "-c", "ulimit -n 65536 || true; exec " + shlex.join(start)]
        ray.pop("args", None)
        ray["env"] = [
            *(ray.get("env") or ()),
            {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "RAY_CLUSTER_NAME", "value": run.cluster},
            {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
            {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
            {
                "name": "RAY_ADDRESS",
                "value": "127.0.0.1:6379" if node_type == "head" else f"{run.head_svc}:6379",
            },
        ]
        spec["containers"] = [ray, *containers[1:]]
        spec.setdefault("restartPolicy", "Always")
        return Pod(self.node, manifest)

    def _step(self, run: RayJobRun) -> None:
        if run.head is None:  # retried every tick while the pod cannot be made (as kubelet retries)
            try:
                head_spec = run.spec["rayClusterSpec"]["headGroupSpec"]
                name = f"{run.cluster}-head-{secrets.token_hex(3)[:5]}"
                run.head = self._ray_pod(run, head_spec, "head", "headgroup", name)
            except RuntimeError as err:
                if run.refused != str(err):
                    log.error("RayJob %s/%s: %s", run.namespace, run.name, err)
                    run.refused = str(err)
                return
        for pod in run.pods():
            pod.tick()
        head = run.head
        if not run.workers and head.running and _gcs_up(head.ip):
            for group in run.spec["rayClusterSpec"].get("workerGroupSpecs") or ():
                for _ in range(int(group.get("replicas", group.get("minReplicas", 0)) or 0)):
                    pod_name = f"{run.cluster}-{group['groupName']}-worker-{secrets.token_hex(3)[:5]}"
                    run.workers.append(self._ray_pod(run, group, "worker", group["groupName"], pod_name))
        ready = _head_ready(head) and all(_worker_ready(w) for w in run.workers)
        ready = ready and (run.workers or not run.spec["rayClusterSpec"].get("workerGroupSpecs"))
        if run.submitter is None and ready:
            self.api.patch_status(
                "ray.io",
                "v1",
                "rayclusters",
                run.namespace,
                run.cluster,
                {
                    "status": {
                        "state": "ready",
                        "readyWorkerReplicas": len(run.workers),
                        "head": {"podIP": head.ip},
                    }
                },
            )
            run.submitter = self._submitter(run)
            self._status(run, {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"})
        if run.submitter is None:
            return
        status = _job_status(head.ip, run.job_id)
        if status and status != run.job_status:
            run.job_status = status
            self._status(run, {"jobStatus": status})
        code = run.submitter.finished
        if status in TERMINAL or (code not in (None, 0) and status not in ("RUNNING", "PENDING")):
            final = status if status in TERMINAL else "FAILED"
            reason = "" if status in TERMINAL else f"the submitter exited {code}"
            run.done = True
            self._status(
                run,
                {
                    "jobStatus": final,
                    "jobDeploymentStatus": TERMINAL[final],
                    "endTime": now(),
                    "succeeded" if final == "SUCCEEDED" else "failed": 1,
                    **({"message": reason, "reason": "SubmissionFailed"} if reason else {}),
                },
            )
            if run.spec.get("shutdownAfterJobFinishes"):
                self._teardown(run, delete_objects=True)

    def _submitter(self, run: RayJobRun) -> Pod:
        template = run.spec.get("submitterPodTemplate") or {
            "spec": {"containers": [{"name": "ray-job-submitter"}]}
        }
        manifest = pod_manifest(
            template,
            f"{run.name}-{secrets.token_hex(3)[:5]}",
            run.namespace,
            {"batch.kubernetes.io/job-name": run.name},
        )
        container = dict(manifest["spec"]["containers"][0])
        container["command"] = [
            "ray",
            "job",
            "submit",
            "--address",
            f"http://{run.head_svc}:8265",
            "--submission-id",
            run.job_id,
            "--",
            *shlex.split(run.spec["entrypoint"]),
        ]
        manifest["spec"]["containers"] = [container]
        manifest["spec"]["restartPolicy"] = "Never"
        return Pod(self.node, manifest)

    def _status(self, run: RayJobRun, status: dict[str, Any]) -> None:
        self.api.patch_status("ray.io", "v1", "rayjobs", run.namespace, run.name, {"status": status})
        self.history.append((run.name, status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")))

    def _teardown(self, run: RayJobRun, delete_objects: bool) -> None:
        for pod in reversed(run.pods()):
            pod.stop()
        run.head, run.workers, run.submitter = None, [], None
        if delete_objects:
            self.api.delete("ray.io", "v1", "rayclusters", run.namespace, run.cluster)
            self.api.delete("", "v1", "services", run.namespace, f"{run.cluster}-head-svc")

    def all_pods(self) -> list[Pod]:
        return [pod for run in self.runs.values() for pod in run.pods()]

    def close(self) -> None:
        for run in self.runs.values():
            self._teardown(run, delete_objects=False)
        self.runs.clear()


def _gcs_up(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 6379), timeout=0.5):
            return True
    except OSError:
        return False


def _safe_ok(ip: str, port: int, path: str) -> bool:
    try:
        return http_ok(ip, port, path)
    except OSError:
        return False


def _head_ready(pod: Pod) -> bool:
    """KubeRay's head probe: the raylet's and the GCS's health endpoints."""
    return (
        pod.running
        and _safe_ok(pod.ip, 52365, "/api/local_raylet_healthz")
        and _safe_ok(pod.ip, 8265, "/api/gcs_healthz")
    )


def _worker_ready(pod: Pod) -> bool:
    return pod.running and _safe_ok(pod.ip, 52365, "/api/local_raylet_healthz")


def _job_status(ip: str, job_id: str) -> str:
    """The job's status from the dashboard's job API ('' while it is not known yet)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8265/api/jobs/{job_id}", timeout=2) as response:
            return str(json.loads(response.read()).get("status") or "")
    except (OSError, ValueError):
        return ""
