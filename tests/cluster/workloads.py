"""The Deployment and StatefulSet controllers of the box: pods for each workload's replicas (random
names for a Deployment, ordinals started in order for an OrderedReady StatefulSet), and the status
the controller manager writes back (replicas, readyReplicas, ...)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from kubelet import Node, Pod, pod_manifest
from podspec import Manifest

log = logging.getLogger("box.workloads")
Key = tuple[str, str, str]  # kind, namespace, name


class Workloads:
    """Reconciles live Deployments and StatefulSets into pods; `patch_status(kind, ns, name, status)`
    writes their status (through the API, as the controller manager does)."""

    def __init__(self, node: Node, patch_status: Callable[[str, str, str, dict[str, Any]], None]) -> None:
        self.node, self.patch_status = node, patch_status
        self.pods: dict[Key, list[Pod]] = {}
        self._uids: dict[Key, str] = {}
        self._written: dict[Key, dict[str, Any]] = {}
        self.errors: dict[Key, str] = {}

    def tick(self, deployments: list[Manifest], statefulsets: list[Manifest]) -> None:
        live: dict[Key, Manifest] = {}
        for kind, objs in (("Deployment", deployments), ("StatefulSet", statefulsets)):
            for obj in objs:
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    live[(kind, meta["namespace"], meta["name"])] = obj
        for key in [k for k in self.pods if k not in live or self._uids.get(k) != live[k]["metadata"]["uid"]]:
            self._scale(key, None, 0)  # deleted (or re-created under the same name): its pods go
            self.pods.pop(key, None)
            self._written.pop(key, None)
        for key, obj in live.items():
            self._uids[key] = obj["metadata"]["uid"]
            try:
                self._scale(key, obj, int(obj["spec"].get("replicas", 1)))
            except Exception as err:  # a pod the box cannot run: say so once, keep the box going
                if self.errors.get(key) != str(err):
                    log.error("%s %s/%s: %s", *key, err)
                    self.errors[key] = str(err)
            for pod in self.pods.get(key, ()):
                pod.tick()
            self._report(key, obj)

    def _scale(self, key: Key, obj: Manifest | None, replicas: int) -> None:
        pods = self.pods.setdefault(key, [])
        while len(pods) > replicas:
            pods.pop().stop()  # the highest ordinal / the newest pod first
        if obj is None:
            return
        kind, namespace, name = key
        template = obj["spec"]["template"]
        if kind == "Deployment":
            while len(pods) < replicas:
                pods.append(
                    Pod(self.node, pod_manifest(template, f"{name}-{secrets.token_hex(3)}", namespace))
                )
            return
        ordered = obj["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        while len(pods) < replicas and (not ordered or all(p.ready for p in pods)):
            ordinal = len(pods)
            pod_name = f"{name}-{ordinal}"
            manifest = pod_manifest(
                template,
                pod_name,
                namespace,
                {
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                },
            )
            pods.append(Pod(self.node, manifest, hostname=pod_name, subdomain=obj["spec"].get("serviceName")))

    def _report(self, key: Key, obj: Manifest) -> None:
        pods = self.pods.get(key, [])
        ready = sum(p.ready for p in pods)
        status: dict[str, Any] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "updatedReplicas": len(pods),
        }
        if key[0] == "Deployment":
            status["availableReplicas"] = ready
        else:
            status["currentReplicas"] = len(pods)
            status["availableReplicas"] = ready
        if self._written.get(key) != status:
            self.patch_status(*key, {"status": status})
            self._written[key] = status

    def all_pods(self) -> list[Pod]:
        return [pod for pods in self.pods.values() for pod in pods]

    def close(self) -> None:
        for key in list(self.pods):
            self._scale(key, None, 0)
        self.pods.clear()
