"""Pure: which spec changes running children can take (live) and which need a restart (rejected).

The children are created from the spec stored in the ``APPLIED_SPEC`` annotation; a later edit is
compared with it field by field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .api import NexRLJobSpec

APPLIED_SPEC = "nexrl.io/applied-spec"
"""Annotation on the job: the spec its children were created from (to tell restart-only changes)."""
LIVE_SPEC_FIELDS = ("spec.inference.replicas", "spec.suspend", "spec.maxRestarts")
"""Spec fields applied to running children; any other change needs a restart (and is rejected)."""
KUEUE_LIVE_SPEC_FIELDS = ("spec.suspend", "spec.maxRestarts")
"""With Kueue the vLLM pods are one pod group of a fixed size, so replicas need a restart too."""


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
