"""The job's PersistentVolumeClaim, when spec.storage asks for a new one (`size`)."""

from __future__ import annotations

from .common import Context, Manifest, manifest, metadata


def build_pvc(ctx: Context) -> Manifest | None:
    """PVC `<job>-data`, owned by the job (deleted with it); None for an existing claim or no storage."""
    storage = ctx.spec.storage
    if storage is None or storage.size is None:
        return None
    spec: Manifest = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": str(storage.size)}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return manifest("v1", "PersistentVolumeClaim", metadata(ctx, ctx.names["storage"], "storage"), spec=spec)
