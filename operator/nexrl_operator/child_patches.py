"""Pure decisions about children that already exist: whose they are and which merge-patch we may send.

The rule: the operator writes only the fields it owns (replicas of its workloads, the RayJob's
``suspend`` unless Kueue manages the job, the ConfigMap's data, its own ownerReference) and never
touches objects that belong to someone else. Which spec changes the children can take at all is
``spec_changes``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

from .builders.common import JOB_LABEL, QUEUE_LABEL

Manifest = dict[str, Any]

SCALED_KINDS = ("Deployment", "StatefulSet")


class Ownership(enum.Enum):
    OWNED = "owned"
    """our controller reference (this job's uid)"""
    ADOPTABLE = "adoptable"
    """no controller, and labelled for this job (e.g. orphaned by an earlier incarnation)"""
    FOREIGN = "foreign"
    """someone else's object that happens to have the name"""


def ownership(obj: Mapping[str, Any], owner_uid: str, job_name: str) -> Ownership:
    """Whose an existing object with a child's name is."""
    meta = obj.get("metadata", {})
    refs = meta.get("ownerReferences") or []
    if any(ref.get("uid") == owner_uid for ref in refs):
        return Ownership.OWNED
    labelled = (meta.get("labels") or {}).get(JOB_LABEL) == job_name
    if labelled and not any(ref.get("controller") for ref in refs):
        return Ownership.ADOPTABLE
    return Ownership.FOREIGN


def adoption_patch(obj: Mapping[str, Any], desired: Mapping[str, Any]) -> Manifest:
    """Merge-patch that adds our controller reference and labels, keeping other owners' references."""
    ours = desired["metadata"]["ownerReferences"]
    others = [ref for ref in obj.get("metadata", {}).get("ownerReferences") or []
              if ref.get("uid") not in {r["uid"] for r in ours}]
    return {"metadata": {"ownerReferences": others + ours, "labels": dict(desired["metadata"]["labels"])}}


def live_patch(obj: Mapping[str, Any], desired: Mapping[str, Any], *, config_frozen: bool = False
               ) -> Manifest:
    """Merge-patch of the fields we own that differ from the desired child; empty when none do.

    ``config_frozen``: a rejected restart-only change is pending, so the ConfigMap keeps the config
    the running pods started with.
    """
    kind = desired["kind"]
    spec, want = obj.get("spec") or {}, desired.get("spec") or {}
    if kind in SCALED_KINDS and spec.get("replicas") != want.get("replicas"):
        return {"spec": {"replicas": want.get("replicas")}}
    if kind == "RayJob" and bool(spec.get("suspend")) != bool(want.get("suspend")) and not kueue_managed(obj):
        return {"spec": {"suspend": bool(want.get("suspend"))}}
    if kind == "ConfigMap" and not config_frozen:
        data, want_data = obj.get("data") or {}, desired.get("data") or {}
        changes = {key: value for key, value in want_data.items() if data.get(key) != value}
        changes.update({key: None for key in data if key not in want_data})
        if changes:
            return {"data": changes}
    return {}


def kueue_managed(obj: Mapping[str, Any]) -> bool:
    """Kueue owns ``spec.suspend`` of workloads that carry its queue-name label."""
    return QUEUE_LABEL in (obj.get("metadata", {}).get("labels") or {})


def scale_to_zero(obj: Mapping[str, Any]) -> Manifest:
    """Merge-patch that frees a workload's pods (a finished job, or a workload no longer wanted).

    It carries the object's resourceVersion when it has one: applied only to the state it was made
    from (a 409 otherwise), so that of two writers racing to free the same pods only one does."""
    if obj.get("kind") in SCALED_KINDS and (obj.get("spec") or {}).get("replicas"):
        version = (obj.get("metadata") or {}).get("resourceVersion")
        return {"spec": {"replicas": 0}, **({"metadata": {"resourceVersion": version}} if version else {})}
    return {}


def describe_patch(patch: Mapping[str, Any], prefix: str = "") -> str:
    """A merge-patch in short, for Events: ``spec.replicas=3``, ``data.cluster.yaml`` (long values elided)."""
    parts = []
    for key, value in patch.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            parts.append(describe_patch(value, path + "."))
        else:
            short = json.dumps(value)
            parts.append(path + (f"={short}" if len(short) <= 40 else ""))
    return ", ".join(parts)
