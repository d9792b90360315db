"""The KubeRay RayJob: the head runs the controller (`nexrl run`), worker groups run rollouts and,
in self-hosted mode, the trainer's GPU ranks."""

from __future__ import annotations

import shlex

from ..api import Resources
from .commands import run_command
from .common import (
    METRICS_PORT,
    SCRAPE_ANNOTATIONS,
    Context,
    Manifest,
    env,
    manifest,
    metadata,
    pod_template,
    port,
    resources,
    runtime_pod_spec,
    volume_mounts,
    volumes,
)

RAY_API_VERSION = "ray.io/v1"
ROLLOUT_GROUP = "rollout"
TRAINER_GROUP = "trainer"
SUBMITTER_RESOURCES = Resources(
    limits={"cpu": "1", "memory": "1Gi"}, requests={"cpu": "500m", "memory": "200Mi"}
)
"""KubeRay's own defaults for the submitter pod, kept when we supply its template."""


def ray_container(ctx: Context, name: str, spec_resources: Resources, gpus: int = 0) -> Manifest:
    """A Ray node container (KubeRay adds `ray start` and the ports); config and storage mounted."""
    return {
        "name": name,
        "image": ctx.image,
        "env": env(ctx),
        "resources": resources(spec_resources, gpus),
        "volumeMounts": volume_mounts(ctx),
    }


def worker_group(
    ctx: Context, group: str, replicas: int, spec_resources: Resources, gpus: int = 0
) -> Manifest:
    """A fixed-size worker group (min = max = replicas: no autoscaling of GPU pods)."""
    container = ray_container(ctx, "ray-worker", spec_resources, gpus)
    return {
        "groupName": group,
        "replicas": replicas,
        "minReplicas": replicas,
        "maxReplicas": replicas,
        "rayStartParams": {},
        "template": pod_template(
            ctx, group, [container], volumes(ctx), kuberay=True, **runtime_pod_spec(ctx)
        ),
    }


def worker_groups(ctx: Context) -> list[Manifest]:
    """Rollout workers (CPU) and, in self-hosted mode, trainer ranks (`gpusPerNode` GPUs each)."""
    spec = ctx.spec
    groups = []
    if spec.rollout.workers:
        groups.append(worker_group(ctx, ROLLOUT_GROUP, spec.rollout.workers, spec.rollout.resources))
    if spec.mode == "self-hosted" and spec.trainer.nodes:
        trainer = spec.trainer
        groups.append(
            worker_group(ctx, TRAINER_GROUP, trainer.nodes, trainer.resources, trainer.gpus_per_node)
        )
    return groups


def submitter_template(ctx: Context) -> Manifest:
    """The submitter pod with the job's labels and scheduling; KubeRay fills in its command."""
    container = {
        "name": "ray-job-submitter",
        "image": ctx.image,
        "resources": resources(SUBMITTER_RESOURCES),
    }
    return pod_template(ctx, "submitter", [container], [], kuberay=True, restartPolicy="Never")


def build_rayjob(ctx: Context) -> Manifest:
    """RayJob `<job>` with an embedded rayClusterSpec, torn down when the entrypoint finishes."""
    spec = ctx.spec
    head = ray_container(ctx, "ray-head", spec.head.resources)
    head["ports"] = [port("metrics", METRICS_PORT)]  # KubeRay adds its own (gcs, dashboard, client)
    body: Manifest = {
        "entrypoint": shlex.join(run_command(ctx)),
        "shutdownAfterJobFinishes": True,
        "suspend": spec.suspend,
        "submitterPodTemplate": submitter_template(ctx),
        "rayClusterSpec": {
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0"},
                "template": pod_template(
                    ctx, "head", [head], volumes(ctx), kuberay=True, annotations=SCRAPE_ANNOTATIONS,
                    **runtime_pod_spec(ctx),
                ),
            },
            "workerGroupSpecs": worker_groups(ctx),
        },
    }
    if spec.ttl_seconds_after_finished is not None:
        body["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    meta = metadata(ctx, ctx.names["rayjob"], "rayjob", workload=True)
    return manifest(RAY_API_VERSION, "RayJob", meta, spec=body)
