"""The job ConfigMap: the runtime's `cluster` section, the overrides, and the inline recipe."""

from __future__ import annotations

import yaml

from nexrl_runtime.contract import ClusterConfig, ClusterInference, ClusterTrainer

from .commands import all_overrides
from .common import HTTP_PORT, Context, Manifest, manifest, metadata

CLUSTER_KEY = "cluster.yaml"
CONFIG_KEY = "config.yaml"
OVERRIDES_KEY = "overrides"
RECIPE_KEY = "recipe"


def inference_urls(ctx: Context) -> list[str]:
    """The inference Service address (headless: its DNS name resolves to every ready replica)."""
    if ctx.spec.inference.replicas == 0:
        return []
    return [ctx.service_url(ctx.names["inference"])]


def trainer_url(ctx: Context) -> str | None:
    """Rank 0 of the trainer StatefulSet, which serves the trainer API (training-service mode)."""
    if ctx.spec.mode != "training-service":
        return None
    service = ctx.names["trainer"]
    return f"http://{ctx.pod_dns(service, f'{service}-0')}:{HTTP_PORT}"


def cluster_config(ctx: Context) -> ClusterConfig:
    """The runtime config's `cluster` section; its GPU counts are the ones the pods' limits use."""
    spec = ctx.spec
    return ClusterConfig(
        namespace=ctx.namespace,
        job_name=ctx.name,
        ray_address="auto",
        inference=ClusterInference(
            base_urls=inference_urls(ctx),
            replicas=spec.inference.replicas,
            gpus_per_replica=spec.inference.gpus_per_replica,
        ),
        trainer=ClusterTrainer(
            nodes=spec.trainer.nodes,
            gpus_per_node=spec.trainer.gpus_per_node,
            base_url=trainer_url(ctx),
        ),
        rollout_workers=spec.rollout.workers,
    )


def dump_yaml(data: object) -> str:
    """Block-style YAML in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def build_configmap(ctx: Context) -> Manifest:
    """ConfigMap `<job>-config`, mounted at /etc/nexrl in every NexRL pod."""
    spec = ctx.spec
    data = {
        CLUSTER_KEY: dump_yaml(cluster_config(ctx).model_dump(mode="json")),
        OVERRIDES_KEY: "".join(f"{line}\n" for line in all_overrides(ctx)),
    }
    if spec.config is not None:
        data[CONFIG_KEY] = dump_yaml(spec.config)
    if spec.recipe is not None:
        data[RECIPE_KEY] = spec.recipe
    return manifest("v1", "ConfigMap", metadata(ctx, ctx.names["config"], "config"), data=data)
