"""Pure reconcile decisions: who owns a child, which fields we may patch, which spec changes need a restart.

The rule: the operator writes only the fields it owns (replicas of its workloads, the RayJob's
``suspend`` unless Kueue manages the job, the ConfigMap's data, its own ownerReference) and never
touches objects that belong to someone else.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

from .api import NexRLJobSpec
from .builders.common import JOB_LABEL, QUEUE_LABEL

Manifest = dict[str, Any]

APPLIED_SPEC = "nexrl.io/applied-spec"
"""Annotation on the job: the spec its children were created from (to tell restart-only changes)."""
LIVE_SPEC_FIELDS = ("spec.inference.replicas", "spec.suspend", "spec.maxRestarts")
"""Spec fields applied to running children; any other change needs a restart (and is rejected)."""
KUEUE_LIVE_SPEC_FIELDS = ("spec.suspend", "spec.maxRestarts")
"""With Kueue the vLLM pods are one pod group of a fixed size, so replicas need a restart too."""
SCALED_KINDS = ("Deployment", "StatefulSet")


class Ownership(enum.Enum):
    OWNED = "owned"
    """our controller reference (this job's uid)"""
    ADOPTABLE = "adoptable"
    """no controller, and labelled for this job (e.g. orphaned by an earlier incarnation)"""
    FOREIGN = "foreign"
    """someone else's object that happens to have the name"""


def changed_paths(old: Any, new: Any, prefix: str) -> list[str]:
    """Dotted paths (API spelling) where two JSON values differ; lists compare as a whole."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[str] = []
        for key in sorted(set(old) | set(new)):
            paths += changed_paths(old.get(key), new.get(key), f"{prefix}.{key}")
        return paths
    return [] if old == new else [prefix]


def restart_fields(applied: Mapping[str, Any], spec: Mapping[str, Any],
                   live_fields: tuple[str, ...] = LIVE_SPEC_FIELDS) -> list[str]:
    """Spec fields changed since the children were created that running children cannot take."""
    return [path for path in changed_paths(applied, spec, "spec")
            if not any(path == live or path.startswith(live + ".") for live in live_fields)]


def spec_dump(spec: NexRLJobSpec) -> dict[str, Any]:
    """A spec as the API spells it (what the applied-spec annotation stores)."""
    return spec.model_dump(mode="json", by_alias=True)


def applied_spec(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec the children were created from (None before the first converge)."""
    applied = (meta.get("annotations") or {}).get(APPLIED_SPEC)
    return json.loads(applied) if applied else None


def pending_restart(meta: Mapping[str, Any], spec: NexRLJobSpec) -> list[str]:
    """Restart-only fields the spec changed since the children were created."""
    applied = applied_spec(meta)
    if applied is None:
        return []
    live = KUEUE_LIVE_SPEC_FIELDS if spec.scheduling.queue_name else LIVE_SPEC_FIELDS
    return restart_fields(applied, spec_dump(spec), live)


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
    """Merge-patch that frees a workload's pods (a finished job, or a workload no longer wanted)."""
    if obj.get("kind") in SCALED_KINDS and (obj.get("spec") or {}).get("replicas"):
        return {"spec": {"replicas": 0}}
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
