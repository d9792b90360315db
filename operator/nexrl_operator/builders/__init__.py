"""Pure builders: a NexRLJob spec in, the manifests of its children out (no client, no I/O).

`build_children` is the one entry point; each module builds one kind of child.
"""

from __future__ import annotations

from ..api import NexRLJob
from ..spec_checks import check_job
from .common import NO_DEFAULTS, Context, Manifest, OperatorDefaults
from .configmap import build_configmap, cluster_config
from .inference import build_inference
from .rayjob import build_rayjob
from .storage import build_pvc
from .trainer import build_trainer

__all__ = ["NO_DEFAULTS", "Context", "Manifest", "OperatorDefaults", "build_children", "cluster_config"]


def build_children(
    job: NexRLJob, *, name: str, namespace: str, uid: str, defaults: OperatorDefaults = NO_DEFAULTS
) -> list[Manifest]:
    """Every child of a job, in creation order (ConfigMap and PVC before the pods that mount them).

    `defaults` are the operator's settings (service account of the NexRL pods, default runtime and
    vLLM images).

    Raises `spec_checks.JobValidationError` when the spec (or `name`) is invalid.
    """
    job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"name": name})})
    check_job(job, default_image=defaults.image)
    ctx = Context(job=job, name=name, namespace=namespace, uid=uid, defaults=defaults)
    pvc = build_pvc(ctx)
    return [
        build_configmap(ctx),
        *([pvc] if pvc else []),
        *build_inference(ctx),
        *build_trainer(ctx),
        build_rayjob(ctx),
    ]
