"""Server-side printing as kube-apiserver does it: Accept negotiation, JSONPath cells, meta.k8s.io Tables.

Pure functions, so that each rule can be unit-tested apart from HTTP. The behaviour follows
k8s.io/apiextensions-apiserver's tableconvertor (CRD printer columns), the apiserver's
``rest.DefaultTableConvertor`` (Name, Created At) and ``handlers/response.go`` (``includeObject``,
headers only on the first watch event).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

JSON = dict[str, Any]
META_GROUP = "meta.k8s.io"
META_VERSIONS = ("v1", "v1beta1")
NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
    "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
CREATED_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It "
    "is not guaranteed to be set in happens-before order across separate operations. Clients may not "
    "set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. "
    "Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")
INCLUDE_OBJECT = ("Object", "Metadata", "None", "")


class NotAcceptable(ValueError):
    """No media type in the Accept header is one this server can produce (HTTP 406)."""


# --- Accept negotiation ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What a read should answer: the object itself (``kind=""``), a Table or PartialObjectMetadata."""

    kind: str = ""
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{META_GROUP}/{self.version}"


def parse_accept(header: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an Accept header, highest ``q`` first (stable), with their parameters."""
    ranges: list[tuple[float, int, str, dict[str, str]]] = []
    for index, part in enumerate(header.split(",")):
        fields = [field.strip() for field in part.split(";")]
        if not fields[0]:
            continue
        params: dict[str, str] = {}
        for field in fields[1:]:
            key, _, value = field.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            ranges.append((-q, index, fields[0].lower(), params))
    return [(media, params) for _, _, media, params in sorted(ranges, key=lambda r: (r[0], r[1]))]


def negotiate(header: str | None) -> Wanted:
    """The first acceptable answer for a read: Table/PartialObjectMetadata in meta.k8s.io v1 or v1beta1
    as JSON, or plain JSON. Protobuf, CBOR and YAML are not served; raises NotAcceptable if nothing fits."""
    if not header or not header.strip():
        return Wanted()
    for media, params in parse_accept(header):
        if media not in ("application/json", "application/*", "*/*"):
            continue
        kind = params.get("as", "")
        if not kind:
            return Wanted()
        if (kind in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")
                and params.get("g") == META_GROUP and params.get("v") in META_VERSIONS):
            return Wanted(kind, params["v"])
    raise NotAcceptable(f"only the following media types are accepted: application/json, "
                        f"application/json;as=Table;v=v1;g=meta.k8s.io (asked: {header!r})")


# --- JSONPath (the subset CRD printer columns use) -------------------------------------------------

_TOKEN = re.compile(r"""
    \.(?P<field>[^.\[\]]+)
  | \[(?P<index>-?\d+)\]
  | \[(?P<wild>\*)\]
  | \[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]
  | \[\?\(@(?P<fpath>(?:\.[^.\s=!<>)\[\]]+)+)\s*(?:(?P<op>==|!=)\s*(?P<lit>'[^']*'|"[^"]*"|[-\w.]+))?\s*\)\]
""", re.VERBOSE)


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a JSONPath: a field, an index, ``*``, or a filter ``[?(@.a.b == "x")]``."""

    kind: str
    name: str = ""
    index: int = 0
    path: tuple[Step, ...] = ()
    op: str = ""
    literal: Any = None


def compile_path(path: str) -> tuple[Step, ...]:
    """Parse a CRD column jsonPath (``.status.phase``, ``.spec.items[0].name``, ``['a.b']``,
    ``[*]``, ``[?(@.type=="Ready")]``); optional ``{...}`` and ``$``; ValueError names the rest."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[Step] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"jsonPath {path!r}: cannot parse {text[position:]!r} at offset {position}; "
                             "valid: .field, [n], [*], ['key'], [?(@.field==value)]")
        if match["field"] is not None:
            steps.append(Step("field", name=match["field"]))
        elif match["index"] is not None:
            steps.append(Step("index", index=int(match["index"])))
        elif match["wild"] is not None:
            steps.append(Step("wild"))
        elif match["quote"] is not None:
            steps.append(Step("field", name=match["key"]))
        else:
            literal: Any = None
            if match["lit"] is not None:
                raw = match["lit"]
                literal = raw[1:-1] if raw[0] in "'\"" else _number_or_word(raw)
            steps.append(Step("filter", path=compile_path(match["fpath"]), op=match["op"] or "",
                              literal=literal))
        position = match.end()
    if not steps:
        raise ValueError(f"jsonPath {path!r}: empty; valid: a path such as .status.phase")
    return tuple(steps)


def _number_or_word(raw: str) -> Any:
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw, raw)


def find(obj: Any, steps: Sequence[Step]) -> list[Any]:
    """Every value the path selects; a missing key or index selects nothing (AllowMissingKeys)."""
    current = [obj]
    for step in steps:
        found: list[Any] = []
        for node in current:
            if step.kind == "field" and isinstance(node, Mapping) and step.name in node:
                found.append(node[step.name])
            elif step.kind == "index" and isinstance(node, list) and -len(node) <= step.index < len(node):
                found.append(node[step.index])
            elif step.kind == "wild" and isinstance(node, list):
                found.extend(node)
            elif step.kind == "wild" and isinstance(node, Mapping):
                found.extend(node[key] for key in sorted(node))
            elif step.kind == "filter" and isinstance(node, list):
                found.extend(item for item in node if _keep(item, step))
        current = found
    return current


def _keep(item: Any, step: Step) -> bool:
    values = find(item, step.path)
    if not step.op:
        return bool(values)
    equal = bool(values) and values[0] == step.literal
    return equal if step.op == "==" else not equal


# --- cells -------------------------------------------------------------------------------------------


def go_text(value: Any) -> str:
    """How client-go's jsonpath prints one value: maps/lists as compact JSON, scalars as Go's %v."""
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def go_float(value: float) -> str:
    """Go's %v of a float64 (strconv 'g', shortest): exponent form below 1e-4 or from 1e6 (1.234567e+06)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = decimal.Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + int(exponent)  # digits before the decimal point
    exp = point - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{minus}{digits}{'0' * (point - len(digits))}"
    return f"{minus}{digits[:point]}.{digits[point:]}"


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery's duration.HumanDuration (what a ``date`` cell shows, e.g. ``5m3s``)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m" if whole % 60 == 0 else f"{minutes}m{whole % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 timestamp as the API writes them (``2026-01-02T03:04:05Z``); ValueError otherwise."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(datetime.UTC)


def cell(column_type: str, value: Any, now: datetime.datetime) -> Any:
    """The cell for one selected value, as tableconvertor's cellForJSONValue (string: printed text);
    a value of the wrong type gives None, an unparseable date ``<invalid>``."""
    if value is None:
        return None
    if column_type == "string":
        return go_text(value)
    if column_type == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        try:
            return human_duration((now - parse_time(value)).total_seconds())
        except ValueError:
            return "<invalid>"
    return None


# --- columns and tables ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """A printer column: its TableColumnDefinition and how to compute its cell."""

    name: str
    type: str
    format: str = ""
    description: str = ""
    priority: int = 0
    json_path: str = ""

    def definition(self) -> JSON:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


NAME_COLUMN = Column("Name", "string", "name", NAME_DESCRIPTION)
DEFAULT_COLUMNS = (NAME_COLUMN, Column("Created At", "date", "", CREATED_DESCRIPTION))


def crd_columns(crd: Mapping[str, Any], version: str) -> tuple[Column, ...]:
    """Name, then the version's additionalPrinterColumns (an Age column when it declares none)."""
    spec = crd.get("spec", {})
    served = next((v for v in spec.get("versions", []) if v.get("name") == version), None)
    if served is None:
        raise ValueError(f"CRD {crd.get('metadata', {}).get('name')!r} serves no version {version!r}")
    declared = served.get("additionalPrinterColumns") or spec.get("additionalPrinterColumns") or [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
         "description": CREATED_DESCRIPTION}]
    columns = [NAME_COLUMN]
    for raw in declared:
        compile_path(raw["jsonPath"])  # a column the real server could not parse fails the same way
        columns.append(Column(
            name=raw["name"], type=raw["type"], format=raw.get("format", ""),
            description=raw.get("description")
            or f"Custom resource definition column (in JSONPath format): {raw['jsonPath']}",
            priority=int(raw.get("priority", 0)), json_path=raw["jsonPath"]))
    return tuple(columns)


def row_cells(obj: Mapping[str, Any], columns: Sequence[Column], now: datetime.datetime) -> list[Any]:
    """The cells of one object: custom columns by JSONPath (first match), the default ones from metadata."""
    meta = obj.get("metadata", {})
    cells: list[Any] = []
    for column in columns:
        if column is NAME_COLUMN or (column.format == "name" and not column.json_path):
            cells.append(meta.get("name", ""))
        elif not column.json_path:  # DefaultTableConvertor's Created At: RFC 3339 in UTC
            created = meta.get("creationTimestamp")
            cells.append(parse_time(created).strftime("%Y-%m-%dT%H:%M:%SZ") if created else
                         "0001-01-01T00:00:00Z")
        else:
            found = find(obj, compile_path(column.json_path))
            cells.append(cell(column.type, found[0], now) if found else None)
    return cells


def row_object(obj: Mapping[str, Any], include: str, wanted: Wanted) -> JSON | None:
    """A row's ``object``: the whole object (Object), PartialObjectMetadata (Metadata, the default), none."""
    if include == "Object":
        return dict(obj)
    if include == "None":
        return None
    return partial_metadata(obj, wanted)


def partial_metadata(obj: Mapping[str, Any], wanted: Wanted) -> JSON:
    """An object's PartialObjectMetadata (its whole metadata), as in a Table row or a metadata-only read."""
    return {"kind": "PartialObjectMetadata", "apiVersion": wanted.api_version,
            "metadata": obj.get("metadata", {})}


def table(objs: Iterable[Mapping[str, Any]], columns: Sequence[Column], *, wanted: Wanted,
          resource_version: str, include: str = "", headers: bool = True,
          now: datetime.datetime | None = None) -> JSON:
    """A meta.k8s.io Table of objects (``headers=False``: no columnDefinitions, as after a watch's
    first event). ``include`` is the request's includeObject; ValueError names a bad one."""
    if include not in INCLUDE_OBJECT:
        raise ValueError(f'unrecognized includeObject value: "{include}"; valid: Object, Metadata, None')
    now = now or datetime.datetime.now(datetime.UTC)
    rows = []
    for obj in objs:
        row: JSON = {"cells": row_cells(obj, columns, now)}
        included = row_object(obj, include, wanted)
        if included is not None:
            row["object"] = included
        rows.append(row)
    return {"kind": "Table", "apiVersion": wanted.api_version,
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": [column.definition() for column in columns] if headers else None,
            "rows": rows}
