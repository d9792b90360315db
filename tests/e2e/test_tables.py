"""Pure rules of the emulator's server-side printing, OpenAPI and strategic merge patches."""

from __future__ import annotations

import datetime

import pytest
import yaml
from apiserver_model import ResourceDef
from apiserver_openapi import gv_document, strict_error, unknown_fields, v3_index
from apiserver_ops import PatchError, strategic_merge_patch
from harness import NEXRL_CRD
from tables import (
    DEFAULT_COLUMNS,
    NotAcceptable,
    Wanted,
    cell,
    compile_path,
    crd_columns,
    find,
    go_float,
    human_duration,
    negotiate,
    parse_accept,
    table,
)

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
KUBECTL_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,"
                  "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")
CRD = yaml.safe_load(NEXRL_CRD.read_text())


@pytest.mark.parametrize(("header", "wanted"), [
    (KUBECTL_ACCEPT, Wanted("Table", "v1")),
    ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", Wanted("Table", "v1beta1")),
    ("application/json", Wanted()),
    ("*/*", Wanted()),
    (None, Wanted()),
    ("", Wanted()),
    ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json", Wanted()),
    ("application/json;as=Table;v=v2;g=meta.k8s.io, application/json", Wanted()),
    ("application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io", Wanted("Table", "v1")),
    ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", Wanted("PartialObjectMetadataList")),
])
def test_negotiate_picks_the_first_acceptable_media_type(header: str | None, wanted: Wanted) -> None:
    assert negotiate(header) == wanted


def test_negotiate_refuses_what_it_cannot_produce() -> None:
    with pytest.raises(NotAcceptable, match="application/yaml"):
        negotiate("application/yaml, application/vnd.kubernetes.protobuf")


def test_parse_accept_orders_by_q_then_position_and_drops_q0() -> None:
    assert [m for m, _ in parse_accept("a/x;q=0.2, b/y, c/z;q=0, d/w;q=0.9")] == ["b/y", "d/w", "a/x"]
    assert parse_accept("application/json; as=Table ;v=v1")[0][1] == {"as": "Table", "v": "v1"}


DOC = {"metadata": {"name": "j", "labels": {"a.b/c": "x"}},
       "status": {"phase": "Running", "conditions": [{"type": "Queued", "status": "False"},
                                                     {"type": "Ready", "status": "True", "n": 2}]},
       "spec": {"items": [1, 2, 3]}}


@pytest.mark.parametrize(("path", "found"), [
    (".status.phase", ["Running"]),
    ("{.status.phase}", ["Running"]),
    ("$.status.phase", ["Running"]),
    (".status.missing", []),
    (".missing.deeper", []),
    (".spec.items[1]", [2]),
    (".spec.items[-1]", [3]),
    (".spec.items[7]", []),
    (".spec.items[*]", [1, 2, 3]),
    (".metadata.labels['a.b/c']", ["x"]),
    ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
    (".status.conditions[?(@.n==2)].type", ["Ready"]),
    (".status.conditions[?(@.type!='Ready')].type", ["Queued"]),
    (".status.conditions[?(@.n)].type", ["Ready"]),
    (".status.phase.deeper", []),
])
def test_jsonpath_selects_like_client_go_with_missing_keys_allowed(path: str, found: list[object]) -> None:
    assert find(DOC, compile_path(path)) == found


@pytest.mark.parametrize("path", ["status.phase", ".a[", ".a[x]", "", ".a..b"])
def test_jsonpath_names_the_unparseable_part(path: str) -> None:
    with pytest.raises(ValueError, match="jsonPath"):
        compile_path(path)


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("string", "Running", "Running"),
    ("string", 3, "3"),
    ("string", 0.5, "0.5"),
    ("string", True, "true"),
    ("string", {"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
    ("integer", 7, 7),
    ("integer", 7.9, 7),
    ("integer", "7", None),
    ("integer", True, None),
    ("number", 3, 3.0),
    ("number", 0.8125, 0.8125),
    ("number", "x", None),
    ("boolean", False, False),
    ("boolean", "true", None),
    ("date", "2026-01-02T03:00:00Z", "4m5s"),
    ("date", "not a time", "<invalid>"),
    ("date", 5, None),
    ("string", None, None),
])
def test_cells_follow_the_columns_type(kind: str, value: object, expected: object) -> None:
    assert cell(kind, value, NOW) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (600, "10m"),
    (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (10 * 3600, "10h"), (50 * 3600, "2d2h"),
    (48 * 3600, "2d"), (30 * 86400, "30d"), (800 * 86400, "2y70d"), (365 * 9 * 86400, "9y"),
])
def test_human_duration_as_kubectl_shows_ages(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0"), (1.0, "1"), (0.8125, "0.8125"), (123456.0, "123456"), (1234567.0, "1.234567e+06"),
    (1e20, "1e+20"), (0.0001, "0.0001"), (0.00001, "1e-05"), (-2.5, "-2.5"),
])
def test_go_float_prints_as_go_does(value: float, text: str) -> None:
    assert go_float(value) == text


def test_crd_columns_are_name_then_the_printer_columns() -> None:
    columns = crd_columns(CRD, "v1alpha1")
    declared = CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c.name for c in columns] == ["Name"] + [c["name"] for c in declared]
    assert columns[0].definition()["format"] == "name"
    by_name = {c.name: c.definition() for c in columns}
    default = "Custom resource definition column (in JSONPath format): .status.phase"
    assert by_name["Phase"] == {"name": "Phase", "type": "string", "format": "", "priority": 0,
                                "description": default}
    assert by_name["Requested"]["description"] == "GPUs the job's spec requests"
    assert by_name["Message"]["priority"] == 1
    with pytest.raises(ValueError, match="serves no version 'v9'"):
        crd_columns(CRD, "v9")


def test_a_crd_without_printer_columns_gets_age() -> None:
    bare = {"spec": {"versions": [{"name": "v1"}]}}
    assert [(c.name, c.type, c.json_path) for c in crd_columns(bare, "v1")][1:] == [
        ("Age", "date", ".metadata.creationTimestamp")]


def test_table_rows_objects_and_headers() -> None:
    job = {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob",
           "metadata": {"name": "j", "namespace": "n", "creationTimestamp": "2026-01-02T03:04:00Z"},
           "status": {"phase": "Running", "step": 4, "reward": 0.5}}
    out = table([job], crd_columns(CRD, "v1alpha1"), wanted=Wanted("Table"), resource_version="9", now=NOW)
    assert out["kind"] == "Table" and out["apiVersion"] == "meta.k8s.io/v1"
    assert out["metadata"] == {"resourceVersion": "9"}
    assert out["rows"][0]["cells"] == ["j", "Running", 4, 0.5, None, None, "5s", None]
    assert out["rows"][0]["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                        "metadata": job["metadata"]}
    full = table([job], DEFAULT_COLUMNS, wanted=Wanted("Table", "v1beta1"), resource_version="9",
                 include="Object", headers=False, now=NOW)
    assert full["columnDefinitions"] is None and full["rows"][0]["object"] == job
    assert full["rows"][0]["cells"] == ["j", "2026-01-02T03:04:00Z"]
    assert "object" not in table([job], DEFAULT_COLUMNS, wanted=Wanted("Table"), resource_version="9",
                                 include="None")["rows"][0]
    with pytest.raises(ValueError, match='unrecognized includeObject value: "All"'):
        table([job], DEFAULT_COLUMNS, wanted=Wanted("Table"), resource_version="9", include="All")


JOB_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_unknown_fields_follow_the_structural_schema() -> None:
    job = {"apiVersion": "x", "kind": "y", "metadata": {"anything": 1},
           "spec": {"image": "i", "imagee": "typo", "config": {"free": {"form": 1}},
                    "rollout": {"workers": 1, "resources": {"requests": {"cpu": "1"}}, "extra": 2}},
           "status": {"phase": "Running", "free": True}}  # status preserves unknown fields
    assert unknown_fields(JOB_SCHEMA, job) == ["spec.imagee", "spec.rollout.extra"]
    items = {"type": "object", "properties": {"l": {"type": "array", "items": {
        "type": "object", "properties": {"a": {"type": "string"}}}}}}
    assert unknown_fields(items, {"l": [{"a": "x"}, {"b": 1}]}) == ["l[1].b"]
    assert unknown_fields(None, {"any": 1}) == []
    assert strict_error("NexRLJob", "v1alpha1", ["spec.a", "spec.b"]) == (
        'NexRLJob in version "v1alpha1" cannot be handled as a NexRLJob: strict decoding error: '
        'unknown field "spec.a", unknown field "spec.b"')


def test_openapi_documents_declare_field_validation_on_patch() -> None:
    job = ResourceDef("nexrl.io", "v1alpha1", "nexrljobs", "NexRLJob", subresources=("status",))
    doc = gv_document([job], {"NexRLJob": JOB_SCHEMA})
    patch = doc["paths"]["/apis/nexrl.io/v1alpha1/namespaces/{namespace}/nexrljobs/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "nexrl.io", "version": "v1alpha1",
                                                        "kind": "NexRLJob"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    schema = doc["components"]["schemas"]["io.nexrl.v1alpha1.NexRLJob"]
    assert schema["properties"]["spec"] == JOB_SCHEMA["properties"]["spec"]
    assert "/apis/nexrl.io/v1alpha1/namespaces/{namespace}/nexrljobs/{name}/status" in doc["paths"]
    index = v3_index({"apis/nexrl.io/v1alpha1": doc})
    url = index["paths"]["apis/nexrl.io/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/nexrl.io/v1alpha1?hash=")
    changed = v3_index({"apis/nexrl.io/v1alpha1": gv_document([job], {})})
    assert changed["paths"]["apis/nexrl.io/v1alpha1"]["serverRelativeURL"] != url  # clients re-fetch


def test_strategic_merge_patch_merges_lists_by_key_and_honours_directives() -> None:
    deployment = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "command": ["run"], "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "b:1"}]}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
        "metadata": {"finalizers": ["f1", "f2"], "labels": {"k": "v"}}}
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
        "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                       {"name": "c", "image": "c:1"}]}},
        "strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"],
                     "labels": {"$patch": "replace", "n": "w"}}}
    out = strategic_merge_patch(deployment, patch)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["b", "a", "c"]
    assert containers[1] == {"name": "a", "image": "a:2", "command": ["run"],
                             "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert out["metadata"] == {"finalizers": ["f2"], "labels": {"n": "w"}}
    removed = strategic_merge_patch(out, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "$patch": "delete"}]}}}, "metadata": {"labels": {"$patch": "delete"}}})
    assert [c["name"] for c in removed["spec"]["template"]["spec"]["containers"]] == ["a", "c"]
    assert "labels" not in removed["metadata"]
    assert strategic_merge_patch({"args": ["a", "b"]}, {"args": ["c"]}) == {"args": ["c"]}  # no merge key
    with pytest.raises(PatchError, match=r"\$patch: 'bogus'"):
        strategic_merge_patch({}, {"a": {"$patch": "bogus"}})
