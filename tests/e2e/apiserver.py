"""In-process Kubernetes API server emulator for end-to-end tests, built on kmock 0.8.

kmock (``kmock.KubernetesEmulator``) provides: the aiohttp server, request parsing, the request
log (``emu.requests``), the DSL for ad-hoc reactions that take priority over the emulation
(``emu['get /healthz'] << 200``), API discovery (/api, /apis, /apis/<g>, /apis/<g>/<v>) built from
``emu.resources``, the ``Status`` error body and the versioned object store
(``emu.objects[resource, namespace, name].history``) and the buses that feed watches.

What kmock 0.8 lacks and this subclass adds (the honest list; everything else is kmock):

* 201 on create; 409 ``AlreadyExists`` (reason + details) for a live name; ``generateName``.
* Stamping: uid, resourceVersion (one global counter, as etcd), generation (1 on create, bumped
  only when something outside metadata/status changes), creationTimestamp; namespace, apiVersion
  and kind filled in from the URL and the resource; no-op writes keep the resourceVersion and
  send no event.
* The status subresource: the main endpoint ignores ``.status``, ``/status`` ignores the rest.
* PUT with a resourceVersion precondition (409 ``Conflict``), as for merge-patches naming one.
* PATCH: ``merge-patch+json`` (RFC 7386); ``json-patch+json`` (RFC 6902) with 422 on a failed
  ``test`` op (kopf's patches start with one); ``strategic-merge-patch+json`` without the Go types:
  maps merge, the lists named in ``apiserver_ops.MERGE_KEYS`` (containers, env, volumes, ports, ...)
  merge by key, other lists are replaced; ``$patch``, ``$setElementOrder``, ``$retainKeys`` and
  ``$deleteFromPrimitiveList`` are honoured (an approximation; accepted for custom resources too,
  where the real server answers 415); apply-patch (server-side apply) answers 415.
* Label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors on metadata.name
  and metadata.namespace, for list, watch and deletecollection.
* Lists carry kind, apiVersion and ``metadata.resourceVersion``.
* Watches: no resourceVersion (or "0") = synthetic ADDED for the current state, then live
  events; a resourceVersion = gap-free replay from a bounded per-resource event log, then live
  events (older than the log: an ERROR event with 410 ``Expired``, as the real server);
  ``timeoutSeconds``; named watches. BOOKMARK events are not sent.
* ``/api/v1/namespaces[/<name>]`` (kmock's parser crashes on them: see apiserver_kmock.py);
  namespaces are created on first use; deleting one deletes its objects.
* Dispatch in O(1) per request (kmock's is O(requests so far): see apiserver_kmock.py).
* Finalizers: DELETE sets deletionTimestamp and keeps the object while finalizers remain; the
  write that removes the last one deletes it; no new finalizers on a deleting object (422).
* Garbage collection by ``ownerReferences`` uid: a deleted owner's dependents are deleted in the
  background (``Foreground`` is treated as ``Background``), or stripped of the reference when
  another owner is alive or ``propagationPolicy=Orphan``; an object created with only dangling
  owners is collected at once. DeleteOptions preconditions (uid, resourceVersion) are honoured.
* CRDs: creating an apiextensions.k8s.io/v1 CustomResourceDefinition registers its resource
  (served versions, kind, scope, short names, subresources) for discovery.
* Discovery also with a trailing slash (``/api/v1/``, ``/apis/``), as the kubernetes client asks.
* Discovery: the builtin resources kopf and the operator use, and KubeRay's ray.io/v1 kinds, are
  pre-declared (``kinds=``) with kind, scope, verbs, short names and status subresources; the core
  groupVersion is ``v1`` (kmock writes ``/v1``, which kubectl cannot map); subresources carry only
  get/patch/update and no categories; CRD categories are served (``kubectl get nexrl``).
* Server-side printing (apiserver_views.py, tables.py): get/list/watch negotiate the Accept header
  (``as=Table`` or ``PartialObjectMetadata[List]`` in meta.k8s.io v1/v1beta1, else plain JSON;
  406 when nothing fits: no protobuf/CBOR/YAML). A Table has the CRD's additionalPrinterColumns
  for the version (Name first; Age when none are declared), cells by JSONPath as the real
  tableconvertor (missing -> null, typed, dates as ages), rows' ``object`` per ``includeObject``
  (PartialObjectMetadata by default); other kinds get the default Name/Created At table (not the
  real server's per-kind printers, e.g. ConfigMap's DATA). Watch events are one-row Tables with the
  column definitions on the first only; watch responses are ``Content-Type: application/json``.
* OpenAPI v3 (apiserver_openapi.py): ``/openapi/v3`` and one document per group-version with the
  paths, operations (``x-kubernetes-action``, ``x-kubernetes-group-version-kind``,
  ``fieldValidation``) and per-kind schemas (a CRD's openAPIV3Schema; a permissive object for
  built-in kinds). kubectl then validates on the server: under ``fieldValidation=Strict`` a write
  to a custom resource with fields its schema does not declare answers 400 with the real message;
  built-in kinds are not checked. No /openapi/v2 (kubectl reads it only as protobuf).
* Field selectors also on an Event's ``involvedObject.*``, ``reason`` and ``type`` (kubectl describe).
* Request recording for RBAC checks and benchmarks: ``emu.calls`` (verb, group, resource,
  subresource, namespace, name, User-Agent, labelSelector, HTTP status, bearer token).
* Fault injection: ``emu.inject(Fault(...))`` answers an error before, or after performing, the
  next matching request(s) (e.g. 409 after a create, to simulate a race).

Not emulated: admission, CRD schema validation (beyond the Strict unknown-field check)/pruning/
defaulting, ``fieldValidation=Warn`` (no Warning header), authn/authz, pagination
(``limit``/``continue`` are ignored: lists are complete), the scale subresource, server-side
apply, BOOKMARKs, a DELETED event when an object's labels stop matching a watch's selector, and
controllers (no pods or statuses appear unless a test writes them).

Differences from kmock's own emulator: a DSL reaction that answers a request replaces the
emulation for that request (kmock would still apply the write); editing ``emu.objects`` directly
bypasses resourceVersions and watch events (use the HTTP API or ``emu.apply``).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import random
import re
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import kmock
from apiserver_kmock import dispatch
from apiserver_model import (
    BUILTINS,
    KUBERAY,
    Call,
    Fault,
    ResourceDef,
    Target,
    parse_target,
    resource_from_crd,
)
from apiserver_ops import (
    JSON,
    PatchError,
    field_values,
    json_patch,
    merge_patch,
    parse_selector,
    strategic_merge_patch,
)
from apiserver_views import Views

Key = tuple[kmock.resource, str | None, str]


_SUFFIX_CHARS = string.ascii_lowercase + string.digits


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or {})


def _essence(obj: JSON) -> JSON:
    """What bumps metadata.generation: anything outside metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


@attrs.define(kw_only=True)
class ApiServer(Views, kmock.KubernetesEmulator):
    """A stateful Kubernetes API for kopf and the kubernetes client: see the module docstring."""

    watch_cache_size: int = 50_000
    kinds: tuple[ResourceDef, ...] = BUILTINS + KUBERAY
    calls: list[Call] = attrs.field(factory=list, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    _defs: dict[kmock.resource, ResourceDef] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _uids: dict[str, Key] = attrs.field(factory=dict, init=False)
    _logs: dict[kmock.resource, collections.deque[tuple[int, JSON]]] = attrs.field(factory=dict, init=False)
    _floors: dict[kmock.resource, int] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        # kmock's scaffold: discovery, /version and the 404 catch-all; NOT kmock's naive CRUD.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        # The kubernetes client asks for /api/v1/ and /apis/ with a trailing slash; kmock has no such route.
        self.fallback["get", re.compile(r"/apis/[^/]+/[^/]+/")] << self._serve_version
        self.fallback["get", re.compile(r"/api/[^/]+/")] << self._serve_version
        self.fallback["get /apis/"] << self._serve_apis
        self.fallback["get /api/"] << self._serve_api
        self.fallback[self._is_resource_request] << self._serve
        self.fallback["get /openapi/v3"] << self._serve_openapi_index
        self.fallback["get", re.compile(r"/openapi/v3/apis?/.+")] << self._serve_openapi_gv
        for definition in self.kinds:
            self.register(definition)
        self._objects[self._res("", "v1", "namespaces"), None, "default"] = self._namespace("default")

    # --- setup and test-side API ---------------------------------------------------------------

    def register(self, definition: ResourceDef) -> None:
        """Serve a resource (kind, scope, subresources) in discovery and CRUD."""
        res = self._res(definition.group, definition.version, definition.plural)
        self._defs[res] = definition
        self.resources[res] = kmock.ResourceInfo(
            kind=definition.kind, singular=definition.kind.lower(), namespaced=definition.namespaced,
            verbs=definition.verbs, shortnames=definition.shortnames, subresources=definition.subresources,
            categories=definition.categories,
        )

    def inject(self, fault: Fault) -> Fault:
        """Answer the next matching request(s) with an error; see :class:`Fault`."""
        self.faults.append(fault)
        return fault

    def live(self, group: str, version: str, plural: str) -> list[JSON]:
        """The live objects of one resource, for assertions (a snapshot, safe to mutate)."""
        res = self._res(group, version, plural)
        return [copy.deepcopy(obj) for obj in self._live(res)]

    async def apply(self, group: str, version: str, plural: str, body: JSON) -> JSON:
        """Create an object without HTTP (e.g. CRDs before the operator starts)."""
        ns = body.get("metadata", {}).get("namespace")
        target = Target("create", group, version, plural, ns, None, None)
        async with self._lock:
            return await self._create(target, copy.deepcopy(body))

    # --- request plumbing ------------------------------------------------------------------------

    @staticmethod
    def _res(group: str, version: str, plural: str) -> kmock.resource:
        return kmock.resource(group=group, version=version, plural=plural)

    @staticmethod
    def _is_resource_request(request: kmock.Request) -> bool:
        return parse_target(request.method.value, request.url.path, request.params) is not None

    async def _handle(self, request: kmock.Request) -> Any:
        target = parse_target(request.method.value, request.url.path, request.params)
        name = target.name if target else None
        if target and target.verb == "create" and isinstance(request.data, dict):
            name = request.data.get("metadata", {}).get("name")
        agent, selector = request.headers.get("User-Agent", ""), request.params.get("labelSelector", "")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        call = Call.of(target, request.url.path, name, agent, selector, token)
        self.calls.append(call)
        fault = next((f for f in self.faults if f.hits < f.times and f.matches(call)), None)
        try:
            if fault is not None and not fault.after:
                fault.hits += 1
                raise _error(fault.status, fault.reason, fault.message)
            response = await dispatch(self, request)
            if fault is not None and response.status < 300:
                fault.hits += 1
                raise _error(fault.status, fault.reason, fault.message)
        except kmock.KubernetesError as exc:
            call.status = exc.status
            raise
        call.status = response.status
        return response

    async def _serve(self, request: kmock.Request) -> kmock.Response:
        target = parse_target(request.method.value, request.url.path, request.params)
        assert target is not None  # guaranteed by _is_resource_request
        if target.resource not in self._defs:
            raise _error(404, "NotFound", f"the server could not find the requested resource {target.plural}")
        body = request.data if isinstance(request.data, (dict, list)) else None
        params = request.params
        if target.verb in ("get", "list", "watch"):
            wanted = self._wanted(request, target)
        if target.verb == "watch":
            events = self._render_watch(target, wanted, self._watch(target, params), params)
            # kubectl picks the stream decoder by Content-Type (kmock's default is octet-stream)
            return kmock.Response(status=200, payload=events, headers={"Content-Type": "application/json"})
        async with self._lock:
            if target.verb == "get":
                got = self._get(target)
                return kmock.Response(status=200, payload=self._render(target, wanted, got, params))
            if target.verb == "list":
                return kmock.Response(status=200, payload=self._render(
                    target, wanted, self._list(target, params), params))
            if target.verb == "create":
                if not isinstance(body, dict):
                    raise _error(400, "BadRequest", "the body of a create must be an object")
                self._check_fields(target, body, params)
                return kmock.Response(status=201, payload=await self._create(target, body))
            if target.verb in ("update", "patch"):
                content_type = request.headers.get("Content-Type", "application/json").split(";")[0]
                if content_type != "application/json-patch+json":
                    self._check_fields(target, body, params)
                modified = await self._modify(target, body, content_type, params)
                return kmock.Response(status=200, payload=modified)
            if target.verb == "delete":
                options = {"propagationPolicy": request.params.get("propagationPolicy"), **(body or {})}
                return kmock.Response(status=200, payload=await self._delete(target, options))
            if target.verb == "deletecollection":
                items = await self._delete_collection(target, request.params)
                return kmock.Response(status=200, payload=items)
        raise _error(405, "MethodNotAllowed", f"{request.method.value} is not supported here")

    # --- reads ---------------------------------------------------------------------------------

    def _key(self, target: Target, name: str | None = None) -> Key:
        scoped = target.namespace if self._defs[target.resource].namespaced else None
        return (target.resource, scoped, name or target.name or "")

    def _get(self, target: Target) -> JSON:
        key = self._key(target)
        if key not in self._objects or self._objects[key].deleted:
            raise _error(404, "NotFound", f'{target.plural} "{target.name}" not found',
                         name=target.name, kind=target.plural)
        return self._objects[key].raw

    def _matcher(self, target: Target, params: dict[str, str]) -> Any:
        labels = parse_selector(params.get("labelSelector"))
        fields = parse_selector(params.get("fieldSelector"))

        def match(obj: JSON) -> bool:
            meta = obj.get("metadata", {})
            return (
                (target.namespace is None or meta.get("namespace") == target.namespace)
                and (target.name is None or meta.get("name") == target.name)
                and labels(meta.get("labels") or {}) and fields(field_values(obj))
            )
        return match

    def _live(self, res: kmock.resource) -> list[JSON]:
        return [obj.raw for (r, _, _), obj in self._objects.items() if r == res and not obj.deleted]

    def _select(self, target: Target, params: dict[str, str]) -> list[JSON]:
        match = self._matcher(target, params)
        return sorted((obj for obj in self._live(target.resource) if match(obj)),
                      key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def _list(self, target: Target, params: dict[str, str]) -> JSON:
        definition = self._defs[target.resource]
        return {
            "apiVersion": definition.api_version, "kind": f"{definition.kind}List",
            "metadata": {"resourceVersion": str(self._rv)}, "items": self._select(target, params),
        }

    async def _watch(self, target: Target, params: dict[str, str]) -> AsyncIterator[Any]:
        since, timeout = params.get("resourceVersion") or "0", float(params.get("timeoutSeconds") or 0)
        match, bus = self._matcher(target, params), self._buses[target.resource]
        async with self._lock:
            mark = await bus.mark()
            if since == "0":
                backlog = [{"type": "ADDED", "object": obj} for obj in self._select(target, params)]
            elif int(since) < self._floors.get(target.resource, 0):
                backlog = [{"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                    "reason": "Expired", "message": f"too old resource version: {since}"}}]
            else:
                log = self._logs.get(target.resource, ())
                backlog = [event for rv, event in log if rv > int(since) and match(event["object"])]
        yield b""  # send the headers now, even if nothing happens
        try:
            for event in backlog:
                yield event
            if backlog and backlog[0]["type"] == "ERROR":
                return
            async with asyncio.timeout(timeout or None):
                async for _, event in bus.stream(since=mark):
                    if match(event["object"]):
                        yield event
        except TimeoutError:
            return
        finally:
            await bus.unmark(mark)

    # --- writes (all under self._lock) ----------------------------------------------------------

    async def _write(self, key: Key, obj: JSON, kind: str) -> JSON:
        """Store one state of an object, bump the resourceVersion and publish the watch event."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind == "ADDED":
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            self._uids[obj["metadata"]["uid"]] = key
        elif kind == "MODIFIED":
            self._objects[key].history.append(obj)
        else:
            self._objects[key].delete()
            self._uids.pop(obj["metadata"]["uid"], None)
        event = {"type": kind, "object": obj}
        log = self._logs.setdefault(key[0], collections.deque(maxlen=self.watch_cache_size))
        if len(log) == log.maxlen:
            self._floors[key[0]] = log[0][0]
        log.append((self._rv, event))
        await self._buses[key[0]].put((self._rv, event))
        return obj

    @staticmethod
    def _namespace(name: str) -> JSON:
        return {"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"},
                "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "0",
                             "creationTimestamp": _now()}}

    async def _create(self, target: Target, body: JSON) -> JSON:
        definition = self._defs[target.resource]
        meta = body.setdefault("metadata", {})
        if definition.namespaced:
            namespace = target.namespace or meta.get("namespace")
            if not namespace or meta.get("namespace", namespace) != namespace:
                raise _error(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = namespace
            await self._ensure_namespace(namespace)
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(_SUFFIX_CHARS, k=5))
        if not meta.get("name"):
            raise _error(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        key = self._key(target, meta["name"])
        if key in self._objects and not self._objects[key].deleted:
            raise _error(409, "AlreadyExists", f'{target.plural} "{meta["name"]}" already exists',
                         name=meta["name"], group=target.group, kind=target.plural)
        body.setdefault("apiVersion", definition.api_version)
        body.setdefault("kind", definition.kind)
        if "status" in definition.subresources:
            body.pop("status", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(transient, None)
        obj = await self._write(key, body, "ADDED")
        if definition.plural == "customresourcedefinitions":
            for served in resource_from_crd(obj):
                self.register(served)
        refs = meta.get("ownerReferences") or []
        if refs and not any(ref.get("uid") in self._uids for ref in refs):
            await self._remove(key, "Background")  # the garbage collector's verdict on orphans
        return obj

    async def _ensure_namespace(self, name: str) -> None:
        key = (self._res("", "v1", "namespaces"), None, name)
        if key not in self._objects or self._objects[key].deleted:
            await self._write(key, self._namespace(name), "ADDED")

    async def _modify(self, target: Target, body: Any, content_type: str,
                      params: dict[str, str] | None = None) -> JSON:
        old = self._get(target)
        current = copy.deepcopy(old)
        try:
            if target.verb == "update":
                candidate = copy.deepcopy(body)
                precondition = (body or {}).get("metadata", {}).get("resourceVersion")
            elif content_type == "application/json-patch+json":
                candidate, precondition = json_patch(current, body or []), None
                self._check_fields(target, candidate, params or {})
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                merge = content_type == "application/merge-patch+json"
                candidate = (merge_patch if merge else strategic_merge_patch)(current, body or {})
                precondition = (body or {}).get("metadata", {}).get("resourceVersion")
            else:
                raise _error(415, "UnsupportedMediaType", f"unsupported patch format {content_type}")
        except PatchError as exc:
            raise _error(exc.status, "Invalid" if exc.status == 422 else "BadRequest", str(exc)) from exc
        if not isinstance(candidate, dict):
            raise _error(400, "BadRequest", "the result of the patch is not an object")
        if precondition and precondition != old["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", f'Operation cannot be fulfilled on {target.plural} '
                         f'"{target.name}": the object has been modified; please apply your changes '
                         "to the latest version")
        new = self._merge_write(target, old, candidate)
        if new == old:
            return old  # a no-op: no new resourceVersion, no event
        if old["metadata"].get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"]["finalizers"])
            if added:
                raise _error(422, "Invalid", "metadata.finalizers: Forbidden: no new finalizers can be "
                             f"added if the object is being deleted, found new finalizers {sorted(added)}")
            if not new["metadata"].get("finalizers"):
                return await self._remove(self._key(target), "Background", new)
        return await self._write(self._key(target), new, "MODIFIED")

    def _merge_write(self, target: Target, old: JSON, candidate: JSON) -> JSON:
        """The object after a write: fields the caller may not change are taken from the old one."""
        has_status = "status" in self._defs[target.resource].subresources
        if target.subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = candidate.get("status")
            if new["status"] is None:
                new.pop("status")
            return new
        new = candidate
        if has_status:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        for frozen in ("name", "namespace", "uid", "creationTimestamp", "generation",
                       "deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            if frozen in old_meta:
                meta[frozen] = old_meta[frozen]
            else:
                meta.pop(frozen, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if _essence(new) != _essence(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        return new

    async def _delete(self, target: Target, options: JSON) -> JSON:
        old = self._get(target)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) and preconditions[field] != old["metadata"].get(field):
                raise _error(409, "Conflict", f"Precondition failed: {field} mismatch for {target.name}")
        return await self._delete_key(self._key(target), options.get("propagationPolicy") or "Background")

    async def _delete_key(self, key: Key, policy: str) -> JSON:
        obj = copy.deepcopy(self._objects[key].raw)
        if not obj["metadata"].get("finalizers"):
            return await self._remove(key, policy)
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        obj["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        return await self._write(key, obj, "MODIFIED")

    async def _remove(self, key: Key, policy: str, final: JSON | None = None) -> JSON:
        """Delete for good, then let the garbage collector handle the dependents."""
        obj = await self._write(key, final or copy.deepcopy(self._objects[key].raw), "DELETED")
        uid = obj["metadata"]["uid"]
        for dep_key, dep in list(self._objects.items()):
            if dep.deleted:
                continue
            if key[0].plural == "namespaces" and dep_key[1] == key[2]:
                await self._delete_key(dep_key, "Background")
                continue
            refs = dep.get("metadata", {}).get("ownerReferences") or []
            if not any(ref.get("uid") == uid for ref in refs):
                continue
            others = [ref for ref in refs if ref.get("uid") != uid]
            if policy == "Orphan" or any(ref.get("uid") in self._uids for ref in others):
                stripped = copy.deepcopy(dep.raw)
                stripped["metadata"]["ownerReferences"] = others
                await self._write(dep_key, stripped, "MODIFIED")
            else:
                await self._delete_key(dep_key, "Background")
        return obj

    async def _delete_collection(self, target: Target, params: dict[str, str]) -> JSON:
        items = [await self._delete_key(self._key(target, obj["metadata"]["name"]), "Background")
                 for obj in self._select(target, params)]
        definition = self._defs[target.resource]
        return {"apiVersion": definition.api_version, "kind": f"{definition.kind}List",
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

