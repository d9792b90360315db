"""The emulator's OpenAPI v3 documents and strict field validation, as pure functions.

kubectl (create/apply/replace) asks ``/openapi/v3`` whether a kind's PATCH takes the
``fieldValidation`` query parameter; when it does, kubectl validates nothing itself and sends
``fieldValidation=Strict``, leaving validation to the server. These documents declare exactly
what the emulator serves: per group-version, the paths of each resource with their operations
(``x-kubernetes-action``, ``x-kubernetes-group-version-kind``, the query parameters), and a schema
per kind: a CRD's own ``openAPIV3Schema``; for built-in kinds a permissive object schema (the
emulator does not model their fields). No /openapi/v2: kubectl reads v2 only as protobuf, and
needs it only where v3 has no answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from apiserver_model import ResourceDef

JSON = dict[str, Any]
# Strategic merge patches of built-in kinds are served but not declared: a declared one makes kubectl
# compute the patch from these documents' schemas, which the emulator does not have for built-in kinds;
# undeclared, kubectl computes it from its compiled types, as against a server without OpenAPI.
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


def gv_key(group: str, version: str) -> str:
    """The key of a group-version in /openapi/v3: ``api/v1`` or ``apis/<group>/<version>``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(definition: ResourceDef) -> str:
    """The component name, reversed-domain as the real server writes it (io.nexrl.v1alpha1.NexRLJob)."""
    group = ".".join(reversed(definition.group.split("."))) if definition.group else "io.k8s.api.core"
    return f"{group}.{definition.version}.{definition.kind}"


def _param(name: str, description: str, kind: str = "string") -> JSON:
    return {"name": name, "in": "query", "description": description,
            "schema": {"type": kind, "uniqueItems": True}}


_FIELD_VALIDATION = _param("fieldValidation", "Strict, Warn or Ignore: what the server does with unknown "
                           "or duplicate fields (the emulator checks unknown fields of custom resources)")
_WRITE_PARAMS = (_param("dryRun", "not emulated"), _param("fieldManager", "recorded nowhere"),
                 _FIELD_VALIDATION)
_LIST_PARAMS = (
    _param("labelSelector", "=, ==, !=, in, notin, exists, !exists"),
    _param("fieldSelector", "metadata.name, metadata.namespace (and involvedObject.* of events)"),
    _param("resourceVersion", "for watches: replay from this version"), _param("watch", "stream events"),
    _param("timeoutSeconds", "for watches", "integer"),
)


def _operation(definition: ResourceDef, action: str, op_id: str, ref: str,
               params: tuple[JSON, ...] = (), body_types: tuple[str, ...] = ()) -> JSON:
    operation: JSON = {
        "operationId": op_id, "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": definition.group, "version": definition.version,
                                            "kind": definition.kind},
        "parameters": list(params),
        "responses": {"200": {"description": "OK",
                              "content": {"application/json": {"schema": {"$ref": ref}}}}},
    }
    if body_types:
        operation["requestBody"] = {"content": {kind: {"schema": {"$ref": ref}} for kind in body_types}}
    return operation


def _paths(definition: ResourceDef) -> dict[str, JSON]:
    prefix = f"/{gv_key(definition.group, definition.version)}"
    scope = "/namespaces/{namespace}" if definition.namespaced else ""
    ref = f"#/components/schemas/{schema_name(definition)}"
    kind = definition.kind + ("Namespaced" if definition.namespaced else "")
    item = {
        "get": _operation(definition, "get", f"read{kind}", ref),
        "put": _operation(definition, "put", f"replace{kind}", ref, _WRITE_PARAMS, ("application/json",)),
        "patch": _operation(definition, "patch", f"patch{kind}", ref, (*_WRITE_PARAMS, _param("force", "not "
                            "emulated", "boolean")), _PATCH_TYPES),
        "delete": _operation(definition, "delete", f"delete{kind}", ref, (_param("propagationPolicy",
                             "Background, Foreground (as Background) or Orphan"),)),
    }
    collection = {
        "get": _operation(definition, "list", f"list{kind}", ref, _LIST_PARAMS),
        "post": _operation(definition, "post", f"create{kind}", ref, _WRITE_PARAMS, ("application/json",)),
    }
    paths = {f"{prefix}{scope}/{definition.plural}": collection,
             f"{prefix}{scope}/{definition.plural}/{{name}}": item}
    for sub in definition.subresources:
        paths[f"{prefix}{scope}/{definition.plural}/{{name}}/{sub}"] = {
            verb: {**operation, "operationId": operation["operationId"] + sub.capitalize()}
            for verb, operation in item.items() if verb != "delete"}
    return paths


def gv_document(definitions: Iterable[ResourceDef], schemas: Mapping[str, JSON]) -> JSON:
    """The OpenAPI v3 document of one group-version; ``schemas`` maps a kind to its openAPIV3Schema."""
    paths: dict[str, JSON] = {}
    components: dict[str, JSON] = {}
    for definition in definitions:
        paths.update(_paths(definition))
        schema = dict(schemas.get(definition.kind) or {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "description": f"{definition.kind}: fields not modelled by the e2e API emulator"})
        schema["x-kubernetes-group-version-kind"] = [
            {"group": definition.group, "version": definition.version, "kind": definition.kind}]
        components[schema_name(definition)] = schema
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (e2e emulator)", "version": "v1"},
            "paths": paths, "components": {"schemas": components}}


def document_hash(document: JSON) -> str:
    """The ``hash`` of a document's serverRelativeURL: changes whenever the document does (clients cache)."""
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:64].upper()


def v3_index(documents: Mapping[str, JSON]) -> JSON:
    """The /openapi/v3 discovery document: group-version key -> its URL (with the content hash)."""
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(doc)}"}
                      for key, doc in sorted(documents.items())}}


# --- strict field validation (custom resources) ------------------------------------------------------


def unknown_fields(schema: Mapping[str, Any] | None, value: Any, path: str = "") -> list[str]:
    """The dotted paths in ``value`` that a structural schema does not declare (what pruning would drop
    and ``fieldValidation=Strict`` rejects). At the top, apiVersion, kind and metadata are the API's own."""
    if not schema:
        return []
    found: list[str] = []
    if isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if not path and key in ("apiVersion", "kind", "metadata"):
                continue
            if embedded and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in properties:
                found += unknown_fields(properties[key], item, child)
            elif isinstance(additional, Mapping):
                found += unknown_fields(additional, item, child)
            elif not (preserve or additional is True):
                found.append(child)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{index}]")
    return found


def strict_error(kind: str, version: str, unknown: list[str]) -> str:
    """The real server's message for unknown fields under fieldValidation=Strict."""
    fields = ", ".join(f'unknown field "{field}"' for field in unknown)
    return f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}'
