"""A small async Kubernetes client for manifests as dicts, and idempotent get-or-create (``ensure``).

Built on ``kubernetes.aio`` (the official client's asyncio flavour), so handlers never block
kopf's event loop. Decisions about ownership and patches are pure and live in ``child_patches``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any

from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from nexrl_runtime.contract import MERGE_PATCH

from . import child_patches

Manifest = dict[str, Any]
USER_AGENT = "nexrl-operator"
"""Sent with the operator's own requests (kopf's carry kopf's), so audit logs tell them apart."""
REPORTING_COMPONENT = "nexrl-operator"
"""The controller named in our Events (``reportingComponent``, ``source.component``)."""

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A non-2xx answer; ``status`` is the HTTP code, ``reason`` Kubernetes' reason (e.g. AlreadyExists)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    """The REST path of a kind; plurals are the lower-case kind + 's' for every kind we manage."""
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    parts = [base] + (["namespaces", namespace] if namespace else []) + [kind.lower() + "s"]
    return "/".join(parts + [part for part in (name, subresource) if part])


class Kube:
    """Dict-in, dict-out CRUD over one ``kubernetes.aio`` ApiClient."""

    def __init__(self, api: aio_client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls) -> Kube:
        """In-cluster credentials inside a pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            aio_config.load_incluster_config()
        else:
            await aio_config.load_kube_config()
        api = aio_client.ApiClient()
        api.user_agent = USER_AGENT
        return cls(api)

    closed: bool = False
    """set by close(): the operator is stopping, and kopf may still fire a timer after its cleanup"""

    async def close(self) -> None:
        self.closed = True
        await self.api.close()

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json"
                      ) -> Manifest:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = await self.api.param_serialize(method=method, resource_path=path, header_params=headers,
                                              body=body, auth_settings=["BearerToken"])
        response = await self.api.call_api(*serialized)
        data = await response.read()
        payload = json.loads(data) if data else {}
        if not 200 <= response.status < 300:
            raise ApiError(response.status, payload.get("reason", ""), payload.get("message", str(payload)))
        return payload

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, obj: Mapping[str, Any]) -> Manifest:
        path = resource_path(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"])
        return await self.request("POST", path, obj)

    async def patch(self, obj: Mapping[str, Any], body: Mapping[str, Any], subresource: str | None = None
                    ) -> Manifest:
        """Merge-patch an existing object (the one given, by apiVersion/kind/namespace/name), or its
        ``subresource`` (e.g. status); cluster-scoped objects have no namespace."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource)
        return await self.request("PATCH", path, body, MERGE_PATCH)

    async def event(self, obj: Mapping[str, Any], *, type_: str, reason: str, message: str,
                    action: str) -> None:
        """Post an Event about ``obj``; best effort (Events are auxiliary): a failure is logged only."""
        event = event_manifest(obj, type_=type_, reason=reason, message=message, action=action,
                               now=datetime.datetime.now(datetime.UTC), instance=reporting_instance())
        try:
            await self.create(event)
        except Exception as exc:  # an Event must never fail a reconcile
            logger.warning("could not post Event %s about %s %s: %s", reason, obj["kind"],
                           obj["metadata"]["name"], exc)

    async def delete(self, obj: Mapping[str, Any], *, uid: str | None = None) -> None:
        """Delete (background propagation), only if it still has ``uid`` when given; absent is fine."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        options: Manifest = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, options)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise


def object_reference(obj: Mapping[str, Any]) -> Manifest:
    """The ObjectReference of an object (an Event's ``involvedObject``)."""
    meta = obj["metadata"]
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"]}
    ref.update({key: meta[key] for key in ("namespace", "uid") if meta.get(key)})
    return ref


def event_manifest(obj: Mapping[str, Any], *, type_: str, reason: str, message: str, action: str,
                   now: datetime.datetime, instance: str) -> Manifest:
    """A core/v1 Event about ``obj`` as client-go's recorder writes one: named ``<object>.<random>``,
    with ``action`` (what was done), ``reportingComponent``/``reportingInstance`` and ``source``."""
    ref = object_reference(obj)
    stamp, micro = now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{ref['name']}.{secrets.token_hex(8)}",
                     "namespace": ref.get("namespace", "default")},
        "involvedObject": ref, "type": type_, "reason": reason, "action": action,
        "message": message if len(message) <= 1024 else message[:1021] + "...",
        "reportingComponent": REPORTING_COMPONENT, "reportingInstance": instance,
        "source": {"component": REPORTING_COMPONENT, "host": instance},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": micro, "count": 1,
    }


def reporting_instance() -> str:
    """Which operator process reports (the pod's name in a cluster)."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname() or "unknown"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What ``ensure`` did to one child; ``obj`` is the child as last seen (None if unknown)."""

    action: str  # created | adopted | updated | unchanged | conflict | terminating
    desired: Manifest
    obj: Manifest | None = None
    patch: Manifest = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.desired['kind']} {self.desired['metadata']['name']}"


async def _create(kube: Kube, desired: Manifest) -> Manifest | None:
    """Create; None when the name is taken (409), so that the caller looks at what is there."""
    try:
        return await kube.create(desired)
    except ApiError as exc:
        if exc.status != 409:
            raise
        return None


async def ensure(kube: Kube, desired: Manifest, *, owner_uid: str, job_name: str,
                 config_frozen: bool = False, fresh: bool = False) -> Outcome:
    """Get-or-create one child: on 409 get it, then adopt it or patch only the fields we own.

    ``fresh``: the job was just created, so try the create first (one request instead of two).
    """
    meta = desired["metadata"]
    key = (desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
    if fresh and (created := await _create(kube, desired)) is not None:
        return Outcome("created", desired, created)
    obj = await kube.get(*key)
    if obj is None and (created := await _create(kube, desired)) is not None:
        return Outcome("created", desired, created)
    obj = obj or await kube.get(*key)
    if obj is None:  # taken, then gone again in between: the caller retries
        raise ApiError(409, "Conflict", f"{desired['kind']} {meta['name']} vanished after a 409")
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return Outcome("terminating", desired, obj)
    owner = child_patches.ownership(obj, owner_uid, job_name)
    if owner is child_patches.Ownership.FOREIGN:
        return Outcome("conflict", desired, obj)
    if owner is child_patches.Ownership.ADOPTABLE:
        body = child_patches.adoption_patch(obj, desired)
        return Outcome("adopted", desired, await kube.patch(obj, body), body)
    body = child_patches.live_patch(obj, desired, config_frozen=config_frozen)
    if body:
        return Outcome("updated", desired, await kube.patch(obj, body), body)
    return Outcome("unchanged", desired, obj)
