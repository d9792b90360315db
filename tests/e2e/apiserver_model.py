"""Plain data of the API server emulator: resource definitions, request targets, calls, faults."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import kmock

ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclasses.dataclass(frozen=True)
class ResourceDef:
    """A served resource: what discovery tells clients and what the store needs to know."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    shortnames: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_STATUS = ("status",)
BUILTINS: tuple[ResourceDef, ...] = (
    ResourceDef("", "v1", "namespaces", "Namespace", namespaced=False, subresources=_STATUS,
                shortnames=("ns",)),
    ResourceDef("", "v1", "configmaps", "ConfigMap", shortnames=("cm",)),
    ResourceDef("", "v1", "secrets", "Secret"),
    ResourceDef("", "v1", "services", "Service", subresources=_STATUS, shortnames=("svc",)),
    ResourceDef("", "v1", "pods", "Pod", subresources=_STATUS, shortnames=("po",)),
    ResourceDef("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=_STATUS,
                shortnames=("pvc",)),
    ResourceDef("", "v1", "resourcequotas", "ResourceQuota", subresources=_STATUS, shortnames=("quota",)),
    ResourceDef("", "v1", "serviceaccounts", "ServiceAccount", shortnames=("sa",)),
    ResourceDef("", "v1", "events", "Event", shortnames=("ev",)),
    ResourceDef("events.k8s.io", "v1", "events", "Event", shortnames=("ev",)),
    ResourceDef("apps", "v1", "deployments", "Deployment", subresources=_STATUS, shortnames=("deploy",)),
    ResourceDef("apps", "v1", "statefulsets", "StatefulSet", subresources=_STATUS, shortnames=("sts",)),
    ResourceDef("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceDef("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                namespaced=False, subresources=_STATUS, shortnames=("crd",)),
)

# KubeRay's resources (ray.io/v1 only: serving v1alpha1 too would make the preferred version random).
KUBERAY: tuple[ResourceDef, ...] = (
    ResourceDef("ray.io", "v1", "rayjobs", "RayJob", subresources=_STATUS),
    ResourceDef("ray.io", "v1", "rayclusters", "RayCluster", subresources=_STATUS),
)


def resource_from_crd(crd: Mapping[str, Any]) -> Iterator[ResourceDef]:
    """The served versions of a CustomResourceDefinition, as resource definitions."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    for version in spec.get("versions", []):
        if version.get("served", True):
            yield ResourceDef(
                group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=tuple(sorted((version.get("subresources") or {}).keys())),
                shortnames=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
            )


@dataclasses.dataclass(frozen=True)
class Target:
    """What a resource request addresses, with its RBAC verb."""

    verb: str
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(group=self.group, version=self.version, plural=self.plural)


def _verb(method: str, name: str | None, params: Mapping[str, str]) -> str | None:
    if method == "GET":
        return "watch" if params.get("watch") in ("true", "1") else "get" if name else "list"
    if name:
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    return {"POST": "create", "DELETE": "deletecollection"}.get(method)


def parse_target(method: str, path: str, params: Mapping[str, str]) -> Target | None:
    """Parse a resource URL; None for discovery and non-Kubernetes paths."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    namespace_subresource = len(rest) == 3 and rest[2] in ("status", "finalize")
    if len(rest) >= 3 and rest[0] == "namespaces" and not (group == "" and namespace_subresource):
        namespace, rest = rest[1], rest[2:]
    if not rest or not rest[0]:
        return None
    name = rest[1] if len(rest) > 1 else None
    verb = _verb(method.upper(), name, params)
    if verb is None:
        return None
    return Target(verb, group, version, rest[0], namespace, name, "/".join(rest[2:]) or None)


@dataclasses.dataclass
class Call:
    """One recorded request: enough to derive RBAC rules and count requests per job."""

    verb: str
    group: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    path: str
    agent: str = ""
    """the client's User-Agent (kopf, the operator's own client, a test)"""
    selector: str = ""
    """the labelSelector of a list or watch"""
    status: int = 0
    token: str = ""
    """the bearer token the request carried (a pod's service-account token), if any"""

    @classmethod
    def of(cls, target: Target | None, path: str, name: str | None, agent: str = "",
           selector: str = "", token: str = "") -> Call:
        if target is None:  # discovery and other non-resource URLs
            return cls("get", None, None, None, None, None, path, agent, token=token)
        return cls(target.verb, target.group, target.plural, target.subresource, target.namespace, name, path,
                   agent, selector, token=token)


@dataclasses.dataclass
class Fault:
    """Answer matching requests with an error, before performing them or (``after``) once done.

    ``Fault("create", "configmaps", status=409, reason="AlreadyExists", after=True)`` creates the
    ConfigMap and then answers 409, as when another writer raced the caller. ``subresource``
    (e.g. "status") matches that subresource instead of the main resource.
    """

    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    status: int = 500
    reason: str = "InternalError"
    message: str = "injected fault"
    after: bool = False
    times: int = 1
    hits: int = 0

    def matches(self, call: Call) -> bool:
        return (
            call.verb == self.verb and call.resource == self.resource and call.subresource == self.subresource
            and self.namespace in (None, call.namespace) and self.name in (None, call.name)
        )


def rbac_rules(calls: list[Call], agent_prefixes: tuple[str, ...]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource[/subresource]) -> verbs used by the clients whose User-Agent starts so."""
    rules: dict[tuple[str, str], set[str]] = {}
    for call in calls:
        if call.resource is not None and call.agent.startswith(agent_prefixes):
            resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
            rules.setdefault((call.group or "", resource), set()).add(call.verb)
    return rules
