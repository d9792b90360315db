"""What the emulator shows besides the objects themselves: Tables, PartialObjectMetadata, OpenAPI v3,
and the strict field check that kubectl's ``fieldValidation=Strict`` asks for.

A mixin of :class:`apiserver.ApiServer`, kept apart so that the store stays readable; the rules
themselves are pure functions in tables.py and apiserver_openapi.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import kmock
from apiserver_model import ResourceDef, Target
from apiserver_openapi import gv_document, gv_key, strict_error, unknown_fields, v3_index
from tables import (
    DEFAULT_COLUMNS,
    Column,
    NotAcceptable,
    Wanted,
    crd_columns,
    negotiate,
    partial_metadata,
    table,
)

JSON = dict[str, Any]
_CRDS = kmock.resource(group="apiextensions.k8s.io", version="v1", plural="customresourcedefinitions")


class Views:
    """Mixin for ApiServer (uses its ``_defs``, ``_live``, ``_rv``): see the module docstring."""

    _defs: dict[kmock.resource, ResourceDef]

    def _live(self, res: kmock.resource) -> list[JSON]:  # provided by ApiServer
        raise NotImplementedError

    # --- negotiation and rendering of reads -----------------------------------------------------------

    @staticmethod
    def _wanted(request: kmock.Request, target: Target) -> Wanted:
        """What the Accept header asks a get/list/watch to answer; 406 as the real server if nothing fits."""
        try:
            wanted = negotiate(request.headers.get("Accept"))
        except NotAcceptable as exc:
            raise kmock.KubernetesError(status=406, reason="NotAcceptable", message=str(exc)) from exc
        listing = target.verb == "list"
        if (wanted.kind == "PartialObjectMetadataList") != listing and wanted.kind.startswith("Partial"):
            raise kmock.KubernetesError(status=406, reason="NotAcceptable", message=(
                f"you requested {wanted.kind}, but the requested object is "
                f"{'a' if listing else 'not a'} list"))
        return wanted

    def _crd(self, group: str, plural: str) -> JSON | None:
        """The live CustomResourceDefinition that serves group/plural, if any."""
        for crd in self._live(_CRDS):
            spec = crd.get("spec", {})
            if spec.get("group") == group and spec.get("names", {}).get("plural") == plural:
                return crd
        return None

    def _columns(self, target: Target) -> tuple[Column, ...]:
        """A CRD's printer columns for the requested version; Name and Created At for other kinds."""
        crd = self._crd(target.group, target.plural)
        return crd_columns(crd, target.version) if crd else DEFAULT_COLUMNS

    def _table(self, target: Target, wanted: Wanted, objs: list[JSON], rv: str, params: Mapping[str, str],
               headers: bool = True) -> JSON:
        try:
            return table(objs, self._columns(target), wanted=wanted, resource_version=rv,
                         include=params.get("includeObject", ""), headers=headers)
        except ValueError as exc:
            raise kmock.KubernetesError(status=400, reason="BadRequest",
                                        message=f"Unable to convert to Table as requested: {exc}") from exc

    def _render(self, target: Target, wanted: Wanted, payload: JSON, params: Mapping[str, str]) -> JSON:
        """A get or list answer in the negotiated form."""
        if not wanted.kind:
            return payload
        listing = target.verb == "list"
        objs = payload["items"] if listing else [payload]
        rv = payload["metadata"].get("resourceVersion", "")
        if wanted.kind == "Table":
            return self._table(target, wanted, objs, rv, params)
        if listing:
            return {"kind": "PartialObjectMetadataList", "apiVersion": wanted.api_version,
                    "metadata": {"resourceVersion": rv}, "items": [partial_metadata(o, wanted) for o in objs]}
        return partial_metadata(payload, wanted)

    async def _render_watch(self, target: Target, wanted: Wanted, events: AsyncIterator[Any],
                            params: Mapping[str, str]) -> AsyncIterator[Any]:
        """Watch events in the negotiated form: a one-row Table per event, headers only on the first."""
        headers = True
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, dict) and event.get("type") != "ERROR" and wanted.kind:
                    obj = event["object"]
                    if wanted.kind == "Table":
                        rv = obj["metadata"].get("resourceVersion", "")
                        shown = self._table(target, wanted, [obj], rv, params, headers=headers)
                        headers = False
                    else:
                        shown = partial_metadata(obj, wanted)
                    event = {"type": event["type"], "object": shown}
                yield event

    # --- discovery ------------------------------------------------------------------------------------

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock's APIResourceList, corrected as the real server writes it: the core groupVersion is
        ``v1`` (kmock writes ``/v1``, which kubectl's RESTMapper cannot match), and subresources carry
        no short names or categories and only the verbs get, patch, update."""
        payload = await super()._serve_version(request)  # type: ignore[misc]
        payload["groupVersion"] = payload["groupVersion"].removeprefix("/")
        for resource in payload["resources"]:
            if "/" in resource["name"]:
                resource.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return payload

    # --- OpenAPI v3 -----------------------------------------------------------------------------------

    def _openapi_documents(self) -> dict[str, JSON]:
        """group-version key -> OpenAPI v3 document, for every resource served now (CRDs included)."""
        schemas: dict[tuple[str, str], dict[str, JSON]] = {}
        for crd in self._live(_CRDS):
            spec = crd.get("spec", {})
            for version in spec.get("versions", []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if version.get("served", True) and schema:
                    schemas.setdefault((spec["group"], version["name"]), {})[spec["names"]["kind"]] = schema
        by_gv: dict[tuple[str, str], list[ResourceDef]] = {}
        for definition in self._defs.values():
            by_gv.setdefault((definition.group, definition.version), []).append(definition)
        return {gv_key(*gv): gv_document(sorted(defs, key=lambda d: d.plural), schemas.get(gv, {}))
                for gv, defs in by_gv.items()}

    async def _serve_openapi_index(self, request: kmock.Request) -> JSON:
        return v3_index(self._openapi_documents())

    async def _serve_openapi_gv(self, request: kmock.Request) -> JSON:
        key = request.url.path.removeprefix("/openapi/v3/").strip("/")
        documents = self._openapi_documents()
        if key not in documents:
            raise kmock.KubernetesError(status=404, reason="NotFound",
                                        message=f"no OpenAPI v3 document for {key}")
        return documents[key]

    # --- fieldValidation=Strict -----------------------------------------------------------------------

    def _check_fields(self, target: Target, body: Any, params: Mapping[str, str]) -> None:
        """Under fieldValidation=Strict, reject fields a custom resource's schema does not declare (400)."""
        if params.get("fieldValidation", "").lower() != "strict" or not isinstance(body, Mapping):
            return
        crd = self._crd(target.group, target.plural)
        if crd is None:
            return  # built-in kinds: the emulator does not model their fields
        version = next((v for v in crd["spec"].get("versions", []) if v.get("name") == target.version), {})
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        unknown = unknown_fields(schema, body)
        if unknown:
            message = strict_error(crd["spec"]["names"]["kind"], target.version, unknown)
            raise kmock.KubernetesError(status=400, reason="BadRequest", message=message)
