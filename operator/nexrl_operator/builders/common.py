"""Pieces every builder shares: labels, owner references, volumes, resources, pod templates."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..api import API_VERSION, GPU_RESOURCE, KIND, NexRLJob, NexRLJobSpec, Resources
from ..naming import child_names

Manifest = dict[str, Any]

APP_NAME = "nexrl"
MANAGER = "nexrl-operator"
JOB_LABEL = "nexrl.io/job"
COMPONENT_LABEL = "app.kubernetes.io/component"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
POD_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
POD_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
KUBERAY_OWNED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/managed-by")
HTTP_PORT = 8000
METRICS_PORT = 9400
"""The runtime's Prometheus /metrics on the Ray head (`++logging.metrics_port`, a containerPort, scrape
annotations and the chart's optional PodMonitor)."""
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
CONFIG_DIR = "/etc/nexrl"
CONFIG_VOLUME = "nexrl-config"
DATA_VOLUME = "nexrl-data"
SHM_VOLUME = "dshm"


@dataclass(frozen=True)
class OperatorDefaults:
    """Operator-wide settings for every job's children (`nexrl-operator run` flags, set by the chart)."""

    service_account: str | None = None
    """ServiceAccount of the NexRL pods (Ray head and workers, trainer pods), allowed to patch the job's
    status; None: the namespace's `default` account"""
    inference_image: str | None = None
    """vLLM image of jobs without spec.inference.image; None: the job's runtime image"""
    image: str | None = None
    """NexRL runtime image of jobs without spec.image; None: none, so spec.image is required"""


NO_DEFAULTS = OperatorDefaults()


@dataclass(frozen=True)
class Context:
    """One job being built: its spec and the identity of the NexRLJob object that owns the children."""

    job: NexRLJob
    name: str
    namespace: str
    uid: str
    defaults: OperatorDefaults = NO_DEFAULTS

    @cached_property
    def names(self) -> dict[str, str]:
        """Role -> child name (see naming.child_names)."""
        return child_names(self.name)

    @property
    def spec(self) -> NexRLJobSpec:
        return self.job.spec

    @property
    def image(self) -> str:
        """The NexRL runtime image: spec.image, else the operator's default (validation makes sure
        there is one)."""
        image = self.spec.image or self.defaults.image
        assert image, "spec_checks requires spec.image when the operator has no default image"
        return image

    @cached_property
    def claim_name(self) -> str | None:
        """The PVC every pod mounts, or None without storage."""
        storage = self.spec.storage
        if storage is None:
            return None
        return storage.existing_claim or self.names["storage"]

    def pod_dns(self, service: str, pod: str) -> str:
        """Stable DNS name of a pod behind a headless Service."""
        return f"{pod}.{service}.{self.namespace}.svc"

    def service_url(self, service: str) -> str:
        """HTTP address of a Service of this job."""
        return f"http://{service}.{self.namespace}.svc:{HTTP_PORT}"


def labels(ctx: Context, component: str) -> dict[str, str]:
    """Labels on every child and pod: app.kubernetes.io/* plus nexrl.io/job."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": ctx.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/managed-by": MANAGER,
        JOB_LABEL: ctx.name,
    }


def selector(ctx: Context, component: str) -> dict[str, str]:
    """The immutable subset of labels that Deployment/StatefulSet/Service selectors match."""
    return {JOB_LABEL: ctx.name, COMPONENT_LABEL: component}


def owner_reference(ctx: Context) -> Manifest:
    """The NexRLJob as controlling owner: children are garbage-collected with it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ctx.name,
        "uid": ctx.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(ctx: Context, name: str, component: str, *, workload: bool = False) -> Manifest:
    """Child metadata; workloads (pods holding resources) also get Kueue's queue-name label."""
    meta_labels = labels(ctx, component)
    if workload and ctx.spec.scheduling.queue_name:
        meta_labels[QUEUE_LABEL] = ctx.spec.scheduling.queue_name
    return {
        "name": name,
        "namespace": ctx.namespace,
        "labels": meta_labels,
        "ownerReferences": [owner_reference(ctx)],
    }


def manifest(api_version: str, kind: str, meta: Manifest, **body: Any) -> Manifest:
    """A whole object: apiVersion, kind, metadata, then the body (spec, data, ...)."""
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}


def resources(spec: Resources, gpus: int = 0) -> Manifest:
    """Container resources: the spec's CPU/memory plus `gpus` GPUs as limit = request."""
    limits = {k: str(v) for k, v in spec.limits.items()}
    requests = {k: str(v) for k, v in spec.requests.items()}
    if gpus:
        limits[GPU_RESOURCE] = requests[GPU_RESOURCE] = str(gpus)
    return {key: value for key, value in (("limits", limits), ("requests", requests)) if value}


def env(ctx: Context, **extra: str) -> list[Manifest]:
    """Environment of every NexRL container: which job and namespace it belongs to, plus `extra`."""
    values = {"NEXRL_JOB_NAME": ctx.name, "NEXRL_NAMESPACE": ctx.namespace, **extra}
    return [{"name": key, "value": value} for key, value in values.items()]


def volumes(ctx: Context, *, config: bool = True, shm: bool = False) -> list[Manifest]:
    """Pod volumes: the job ConfigMap, the storage PVC, and a memory /dev/shm (NCCL, vLLM)."""
    out: list[Manifest] = []
    if config:
        out.append({"name": CONFIG_VOLUME, "configMap": {"name": ctx.names["config"]}})
    if ctx.claim_name:
        out.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": ctx.claim_name}})
    if shm:
        out.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
    return out


def volume_mounts(ctx: Context, *, config: bool = True, shm: bool = False) -> list[Manifest]:
    """Mounts matching `volumes` with the same flags."""
    out: list[Manifest] = []
    if config:
        out.append({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True})
    if ctx.claim_name and ctx.spec.storage:
        out.append({"name": DATA_VOLUME, "mountPath": ctx.spec.storage.mount_path})
    if shm:
        out.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return out


def pod_template(
    ctx: Context,
    component: str,
    containers: list[Manifest],
    pod_volumes: list[Manifest],
    *,
    kuberay: bool = False,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Manifest:
    """A pod template with the job's labels and scheduling (priority, node selector, tolerations).

    KubeRay's pods (`kuberay=True`) keep KubeRay's own app.kubernetes.io/name and managed-by: its
    head Service selects on them.
    """
    scheduling = ctx.spec.scheduling
    pod_labels = labels(ctx, component)
    if kuberay:
        for key in KUBERAY_OWNED_LABELS:
            del pod_labels[key]
    pod: Manifest = {"containers": containers, **spec}
    if pod_volumes:
        pod["volumes"] = pod_volumes
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    if scheduling.node_selector:
        pod["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in scheduling.tolerations]
    meta: Manifest = {"labels": pod_labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"metadata": meta, "spec": pod}


def runtime_pod_spec(ctx: Context) -> Manifest:
    """Pod-spec fields of the pods that run NexRL code: the service account that reports progress."""
    account = ctx.defaults.service_account
    return {"serviceAccountName": account} if account else {}


def port(name: str, number: int) -> Manifest:
    """A named TCP container port."""
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def headless_service(ctx: Context, name: str, component: str, ports: list[Manifest], **spec: Any) -> Manifest:
    """A headless Service: its DNS name resolves to every pod (and pod-N.<svc> for StatefulSets)."""
    service_ports = [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]} for p in ports]
    body = {"clusterIP": "None", "selector": selector(ctx, component), "ports": service_ports, **spec}
    return manifest("v1", "Service", metadata(ctx, name, component), spec=body)


def kueue_pod_group(ctx: Context, template: Manifest, group: str, size: int) -> Manifest:
    """Make the pods of a template one Kueue pod group (plain pods, admitted all together), when the
    job names a Kueue queue: the queue-name and pod-group-name labels, the total-count annotation."""
    queue = ctx.spec.scheduling.queue_name
    if queue:
        template["metadata"]["labels"].update({QUEUE_LABEL: queue, POD_GROUP_LABEL: group})
        template["metadata"]["annotations"] = {POD_GROUP_COUNT: str(size)}
    return template
