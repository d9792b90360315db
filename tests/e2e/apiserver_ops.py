"""Pure helpers of the API server emulator: patch formats and label/field selectors.

Kept apart from the HTTP side so that each rule is small, readable and unit-testable.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

JSON = dict[str, Any]


class PatchError(ValueError):
    """A patch that cannot be applied; ``status`` is the HTTP code the API server answers."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge-patch: dicts merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Merge keys of the built-in lists that strategic merge patches merge by key (others are replaced).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",),
    "env": ("name",), "volumes": ("name",), "imagePullSecrets": ("name",), "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "port"), "volumeDevices": ("devicePath",), "hostAliases": ("ip",),
    "conditions": ("type",), "ownerReferences": ("uid",), "topologySpreadConstraints": ("topologyKey",),
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch without the type's Go struct: maps merge as in a merge-patch; lists named
    in MERGE_KEYS merge by key (``$patch: delete`` items removed, ``$setElementOrder/<f>`` orders them);
    other lists are replaced; ``$patch: replace|delete`` on maps, ``$retainKeys`` and
    ``$deleteFromPrimitiveList/<f>`` are honoured."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    body = {key: value for key, value in patch.items() if key != "$patch"}
    if directive == "replace":
        return strategic_merge_patch(None, body)
    if directive not in (None, "merge"):
        raise PatchError(f"$patch: {directive!r} is not valid in a map; valid: replace, merge, delete", 400)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in body.items():
        if key.startswith(("$setElementOrder/", "$deleteFromPrimitiveList/")) or key == "$retainKeys":
            continue
        if value is None or (isinstance(value, Mapping) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            order = body.get(f"$setElementOrder/{key}")
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key], order)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    for key, values in body.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(result.get(key.split("/", 1)[1]), list):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result[field] if item not in values]
    if isinstance(body.get("$retainKeys"), list):
        result = {key: value for key, value in result.items() if key in body["$retainKeys"]}
    return result


def _merge_list(current: list[Any], patch: list[Any], keys: tuple[str, ...], order: Any) -> list[Any]:
    items = [item for item in patch if isinstance(item, Mapping)]
    key = next((k for k in keys if items and all(k in item for item in items)), None)
    if key is None or len(items) != len(patch) or any(item.get("$patch") == "replace" for item in items):
        return [strategic_merge_patch(None, item) for item in patch if item.get("$patch") != "replace"]
    merged = [copy.deepcopy(item) for item in current]
    for item in items:
        index = next((i for i, old in enumerate(merged)
                      if isinstance(old, Mapping) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            merged = [old for i, old in enumerate(merged) if i != index]
        elif index is None:
            merged.append(strategic_merge_patch(None, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    if isinstance(order, list):
        rank = {entry.get(key): i for i, entry in enumerate(order) if isinstance(entry, Mapping)}
        last = len(rank)
        merged.sort(key=lambda old: rank.get(old.get(key), last) if isinstance(old, Mapping) else last)
    return merged


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}", 400)
    return [_unescape(token) for token in path[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        return doc
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        return value
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise PatchError(f"index {last!r} out of range in {path!r}")
        parent.insert(index, value)
    else:
        raise PatchError(f"cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise PatchError(f"path {path!r} does not exist")
    return doc


def json_patch(target: Any, ops: list[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON patch; a failed ``test`` op raises PatchError(422) as kube-apiserver answers."""
    doc = copy.deepcopy(target)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test operation failed at {path!r}: value differs", 422)
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, value)
        else:
            raise PatchError(f"unknown JSON patch op {kind!r}", 400)
    return doc


# --- label and field selectors -----------------------------------------------------------------

Predicate = Callable[[Mapping[str, str]], bool]
_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(\S*)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def _requirement(text: str) -> Predicate:
    if match := _SET_RE.match(text):
        key, operator, raw = match.groups()
        values = {value.strip() for value in raw.split(",") if value.strip()}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _CMP_RE.match(text):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    stripped = text.strip()
    if stripped.startswith("!"):
        return lambda labels: stripped[1:].strip() not in labels
    if re.fullmatch(r"[\w./-]+", stripped):
        return lambda labels: stripped in labels
    raise PatchError(f"unable to parse requirement {text!r}", 400)


def parse_selector(selector: str | None) -> Predicate:
    """Compile a label selector (``a=b,c!=d,e in (f,g),!h,i``) into a predicate over a label map."""
    requirements = [_requirement(part) for part in _split_requirements(selector or "")]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def field_values(obj: Mapping[str, Any]) -> dict[str, str]:
    """The fields a field selector may name: metadata.name/namespace, and an Event's involvedObject.*,
    reason and type (what ``kubectl describe`` selects events by)."""
    meta = obj.get("metadata", {})
    values = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace") or ""}
    if obj.get("kind") == "Event" and isinstance(obj.get("involvedObject"), Mapping):
        for key, value in obj["involvedObject"].items():
            values[f"involvedObject.{key}"] = str(value)
        values.update({"reason": str(obj.get("reason") or ""), "type": str(obj.get("type") or "")})
    return values
