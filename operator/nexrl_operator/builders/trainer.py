"""Training-service mode: `nexrl serve-trainer` pods (a StatefulSet, one rank per pod) + Service."""

from __future__ import annotations

from .commands import serve_trainer_command
from .common import (
    HTTP_PORT,
    Context,
    Manifest,
    env,
    headless_service,
    manifest,
    metadata,
    pod_template,
    port,
    resources,
    runtime_pod_spec,
    selector,
    volume_mounts,
    volumes,
)

COMPONENT = "trainer"
DIST_PORT = 29500
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def _rank_env() -> Manifest:
    return {
        "name": "NODE_RANK",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
    }


def trainer_container(ctx: Context) -> Manifest:
    """One trainer rank; rank 0 (`<job>-trainer-0`) is the rendezvous host and serves the API."""
    trainer, service = ctx.spec.trainer, ctx.names["trainer"]
    rendezvous = env(
        ctx,
        MASTER_ADDR=ctx.pod_dns(service, f"{service}-0"),
        MASTER_PORT=str(DIST_PORT),
        NNODES=str(trainer.nodes),
        NPROC_PER_NODE=str(trainer.gpus_per_node),
    )
    return {
        "name": "trainer",
        "image": ctx.image,
        "command": serve_trainer_command(ctx),
        "env": [*rendezvous, _rank_env()],
        "ports": [port("http", HTTP_PORT), port("dist", DIST_PORT)],
        "resources": resources(trainer.resources, trainer.gpus_per_node),
        "volumeMounts": volume_mounts(ctx, shm=True),
    }


def build_trainer(ctx: Context) -> list[Manifest]:
    """StatefulSet + headless Service `<job>-trainer`; only in training-service mode."""
    if ctx.spec.mode != "training-service":
        return []
    name = ctx.names["trainer"]
    container = trainer_container(ctx)
    statefulset = manifest(
        "apps/v1",
        "StatefulSet",
        metadata(ctx, name, COMPONENT, workload=True),
        spec={
            "serviceName": name,
            "replicas": 0 if ctx.spec.suspend else ctx.spec.trainer.nodes,
            # Parallel: every rank must be up for the rendezvous, not one after the other.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(ctx, COMPONENT)},
            "template": pod_template(
                ctx, COMPONENT, [container], volumes(ctx, shm=True), **runtime_pod_spec(ctx)
            ),
        },
    )
    # Ranks must resolve each other before they are ready: publish not-ready addresses.
    service = headless_service(ctx, name, COMPONENT, container["ports"], publishNotReadyAddresses=True)
    return [service, statefulset]
