"""The emulator's wire formats besides objects: Tables, PartialObjectMetadata, OpenAPI v3, strict fields."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from harness import EmulatorThread

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
JOBS = "/apis/nexrl.io/v1alpha1/namespaces/{ns}/nexrljobs"
_names = itertools.count()


@pytest.fixture()
def ns() -> str:
    return f"views-{next(_names)}"


def http(server: EmulatorThread, method: str, path: str, body: Any = None,
         **headers: str) -> tuple[int, dict[str, str], Any]:
    """One request; (status, headers, decoded JSON body, or the lines of a watch stream)."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {key.replace("_", "-"): value for key, value in headers.items()}
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        status, got, raw = err.code, dict(err.headers), err.read()
    if "watch=true" in path:
        return status, got, [json.loads(line) for line in raw.splitlines() if line.strip()]
    return status, got, json.loads(raw or b"null")


def job(name: str) -> dict[str, Any]:
    return {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob", "metadata": {"name": name},
            "spec": {"image": "nexrl:test"}}


@pytest.fixture()
def jobs(server: EmulatorThread, ns: str) -> str:
    """Two NexRLJobs in ``ns``, one with a status; returns the collection path."""
    path = JOBS.format(ns=ns)
    for name in ("a", "b"):
        assert http(server, "POST", path, job(name))[0] == 201
    status = {"status": {"phase": "Running", "step": 3, "reward": 0.5, "message": "hi"}}
    merge = "application/merge-patch+json"
    assert http(server, "PATCH", f"{path}/a/status", status, Content_Type=merge)[0] == 200
    return path


def test_list_as_table_has_the_crd_columns_and_partial_metadata(server: EmulatorThread, jobs: str) -> None:
    status, headers, body = http(server, "GET", jobs, Accept=f"{TABLE},application/json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert (body["kind"], body["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert body["metadata"]["resourceVersion"].isdigit()
    assert [c["name"] for c in body["columnDefinitions"]] == [
        "Name", "Phase", "Step", "Reward", "Requested", "Held", "Age", "Message"]
    assert set(body["columnDefinitions"][0]) == {"name", "type", "format", "description", "priority"}
    a, b = body["rows"]
    assert a["cells"][:4] == ["a", "Running", 3, 0.5] and a["cells"][4:6] == [None, None]
    assert a["cells"][7] == "hi" and b["cells"][1:4] == [None, None, None]
    assert a["object"]["kind"] == "PartialObjectMetadata" and a["object"]["metadata"]["name"] == "a"
    assert "spec" not in a["object"]


def test_get_as_table_with_include_object(server: EmulatorThread, jobs: str) -> None:
    _, _, body = http(server, "GET", f"{jobs}/a?includeObject=Object", Accept=TABLE)
    [row] = body["rows"]
    assert row["object"]["kind"] == "NexRLJob" and row["object"]["status"]["step"] == 3
    assert body["metadata"]["resourceVersion"] == row["object"]["metadata"]["resourceVersion"]
    _, _, none = http(server, "GET", f"{jobs}/a?includeObject=None", Accept=TABLE)
    assert "object" not in none["rows"][0]
    status, _, bad = http(server, "GET", f"{jobs}/a?includeObject=All", Accept=TABLE)
    assert status == 400 and 'unrecognized includeObject value: "All"' in bad["message"]


def test_plain_json_unless_a_table_is_asked(server: EmulatorThread, jobs: str) -> None:
    for accept in ("application/json", "*/*", ""):
        _, _, body = http(server, "GET", jobs, **({"Accept": accept} if accept else {}))
        assert body["kind"] == "NexRLJobList"
    status, _, body = http(server, "GET", jobs, Accept="application/vnd.kubernetes.protobuf")
    assert status == 406 and body["reason"] == "NotAcceptable"


def test_core_kinds_get_the_default_table_and_partial_metadata(server: EmulatorThread, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    http(server, "POST", path, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    _, _, body = http(server, "GET", path, Accept=TABLE)
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Created At"]
    [row] = body["rows"]
    assert row["cells"][0] == "c" and row["cells"][1].endswith("Z")
    meta = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
    _, _, listing = http(server, "GET", path, Accept=meta)
    assert listing["kind"] == "PartialObjectMetadataList" and "data" not in listing["items"][0]
    one = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
    assert http(server, "GET", f"{path}/c", Accept=one)[2]["metadata"]["name"] == "c"
    assert http(server, "GET", path, Accept=one)[0] == 406  # a list is not a PartialObjectMetadata


def test_watch_as_table_sends_headers_on_the_first_event_only(server: EmulatorThread, jobs: str) -> None:
    status, headers, events = http(server, "GET", f"{jobs}?watch=true&timeoutSeconds=1", Accept=TABLE)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    first, second = (e["object"] for e in events)
    assert first["kind"] == "Table" and len(first["columnDefinitions"]) == 8
    assert second["columnDefinitions"] is None
    assert [r["cells"][0] for r in first["rows"] + second["rows"]] == ["a", "b"]


def test_openapi_v3_serves_every_group_version_with_field_validation(server: EmulatorThread,
                                                                     jobs: str) -> None:
    _, _, index = http(server, "GET", "/openapi/v3")
    assert {"api/v1", "apis/apps/v1", "apis/nexrl.io/v1alpha1", "apis/ray.io/v1"} <= set(index["paths"])
    _, _, doc = http(server, "GET", index["paths"]["apis/nexrl.io/v1alpha1"]["serverRelativeURL"])
    patch = doc["paths"]["/apis/nexrl.io/v1alpha1/namespaces/{namespace}/nexrljobs/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "spec" in doc["components"]["schemas"]["io.nexrl.v1alpha1.NexRLJob"]["properties"]
    assert http(server, "GET", "/openapi/v3/apis/nope.io/v1")[0] == 404


def test_strict_field_validation_rejects_unknown_custom_resource_fields(server: EmulatorThread,
                                                                        ns: str) -> None:
    path = JOBS.format(ns=ns)
    typo = job("t")
    typo["spec"]["imagee"] = "x"
    status, _, body = http(server, "POST", f"{path}?fieldValidation=Strict", typo)
    assert status == 400 and body["message"].endswith('strict decoding error: unknown field "spec.imagee"')
    assert http(server, "POST", path, typo)[0] == 201  # without Strict the write is accepted
    patch = {"spec": {"inference": {"replicaz": 2}}}
    status, _, body = http(server, "PATCH", f"{path}/t?fieldValidation=Strict", patch,
                           Content_Type="application/merge-patch+json")
    assert status == 400 and 'unknown field "spec.inference.replicaz"' in body["message"]


def test_discovery_core_group_version_and_subresources(server: EmulatorThread) -> None:
    _, _, core = http(server, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["namespaces"]["shortNames"] == ["ns"]
    assert sorted(by_name["pods/status"]["verbs"]) == ["get", "patch", "update"]
    _, _, nexrl = http(server, "GET", "/apis/nexrl.io/v1alpha1")
    by_name = {r["name"]: r for r in nexrl["resources"]}
    assert by_name["nexrljobs"]["categories"] == ["nexrl"] and by_name["nexrljobs/status"]["categories"] == []


def test_the_emulator_binds_the_host_it_is_given() -> None:
    with EmulatorThread(host="127.0.0.2") as other:
        assert other.url.startswith("http://127.0.0.2:")
        assert http(other, "GET", "/api/v1")[2]["groupVersion"] == "v1"
