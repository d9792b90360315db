"""vLLM inference: a Deployment of OpenAI-compatible servers behind a headless Service."""

from __future__ import annotations

from .commands import vllm_command
from .common import (
    HTTP_PORT,
    Context,
    Manifest,
    env,
    headless_service,
    kueue_pod_group,
    manifest,
    metadata,
    pod_template,
    port,
    resources,
    selector,
    volume_mounts,
    volumes,
)

COMPONENT = "inference"
STARTUP_SECONDS = 1800
"""How long a server may take to load weights before Kubernetes restarts it."""


def _probe(period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def cache_env(ctx: Context) -> dict[str, str]:
    """With storage, vLLM's caches (model inspection, torch.compile) and inductor's live on the claim,
    so a restarted replica, or the next job on the same claim, reuses them instead of recompiling."""
    if not (ctx.claim_name and ctx.spec.storage):
        return {}
    root = f"{ctx.spec.storage.mount_path.rstrip('/')}/.cache"
    return {"VLLM_CACHE_ROOT": f"{root}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{root}/torchinductor"}


def inference_container(ctx: Context) -> Manifest:
    """The `vllm serve` container; weight pushes need VLLM_SERVER_DEV_MODE=1 (/pause, /update_weights ...)."""
    inference = ctx.spec.inference
    return {
        "name": "vllm",
        "image": inference.image or ctx.defaults.inference_image or ctx.image,
        "command": vllm_command(ctx),
        "env": env(ctx, VLLM_SERVER_DEV_MODE="1", **cache_env(ctx)),
        "ports": [port("http", HTTP_PORT)],
        "resources": resources(inference.resources, inference.gpus_per_replica),
        "volumeMounts": volume_mounts(ctx, config=False, shm=True),
        "startupProbe": _probe(10, STARTUP_SECONDS // 10),
        "readinessProbe": _probe(5, 3),
    }


def build_inference(ctx: Context) -> list[Manifest]:
    """Deployment + Service `<job>-inference`; nothing when spec.inference.replicas is 0."""
    inference = ctx.spec.inference
    if inference.replicas == 0:
        return []
    name = ctx.names["inference"]
    container = inference_container(ctx)
    deployment = manifest(
        "apps/v1",
        "Deployment",
        metadata(ctx, name, COMPONENT, workload=True),
        spec={
            "replicas": 0 if ctx.spec.suspend else inference.replicas,
            # Recreate: a surge pod would need GPUs beyond the job's quota.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(ctx, COMPONENT)},
            # With Kueue the vLLM pods are plain pods: one pod group, so that they are admitted together.
            "template": kueue_pod_group(
                ctx, pod_template(ctx, COMPONENT, [container], volumes(ctx, config=False, shm=True)),
                name, inference.replicas),
        },
    )
    service = headless_service(ctx, name, COMPONENT, container["ports"])
    return [service, deployment]
