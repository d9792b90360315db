"""The API server emulator on its own: the real kubernetes client over loopback HTTP."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from apiserver_model import Fault
from apiserver_ops import PatchError, json_patch, merge_patch, parse_selector
from harness import EmulatorThread, wait_for
from kubernetes.client.exceptions import ApiException

_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorThread]:
    with EmulatorThread() as thread:
        yield thread


@pytest.fixture()
def api(server: EmulatorThread) -> Iterator[kubernetes.client.ApiClient]:
    with server.api_client() as client:
        yield client


@pytest.fixture()
def ns() -> str:
    return f"ns-{next(_names)}"


def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


def apps(api: kubernetes.client.ApiClient) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api)


def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def cm(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, **meta}, "data": {"k": "v"}}


def deployment(name: str, replicas: int = 1, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **meta},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"readyReplicas": 99},
    }


def raw(api: kubernetes.client.ApiClient, method: str, path: str, body: Any = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    """A request the typed API cannot express (or would reshape), over the same client."""
    url = api.configuration.host + path
    response = api.call_api(method, url, header_params={"Content-Type": content_type}, body=body)
    response.read()
    return response.status, json.loads(response.data or b"null")


def test_create_stamps_metadata_and_answers_201(api: kubernetes.client.ApiClient, ns: str) -> None:
    status, obj = raw(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm("a"))
    assert status == 201
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0 and meta["namespace"] == ns
    assert obj["apiVersion"] == "v1" and obj["kind"] == "ConfigMap"
    assert core(api).read_namespace(ns).status.phase == "Active"  # created on first use


def test_create_of_a_live_name_is_409_already_exists(api: kubernetes.client.ApiClient, ns: str) -> None:
    core(api).create_namespaced_config_map(ns, cm("a"))
    with pytest.raises(ApiException) as err:
        core(api).create_namespaced_config_map(ns, cm("a"))
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"


def test_generate_name_and_missing_name(api: kubernetes.client.ApiClient, ns: str) -> None:
    obj = core(api).create_namespaced_config_map(ns, {"metadata": {"generateName": "ev-"}})
    assert obj.metadata.name.startswith("ev-") and len(obj.metadata.name) == 8
    with pytest.raises(ApiException) as err:
        core(api).create_namespaced_config_map(ns, {"metadata": {}})
    assert err.value.status == 422


def test_get_missing_is_404(api: kubernetes.client.ApiClient, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        core(api).read_namespaced_config_map("nope", ns)
    assert err.value.status == 404 and json.loads(err.value.body)["reason"] == "NotFound"


def test_put_checks_resource_version_and_bumps_generation_on_spec_only(
        api: kubernetes.client.ApiClient, ns: str) -> None:
    created = apps(api).create_namespaced_deployment(ns, deployment("d"))
    assert created.status is None  # status is not writable on create
    body = api.sanitize_for_serialization(created)
    body["metadata"]["labels"] = {"x": "y"}
    relabelled = apps(api).replace_namespaced_deployment("d", ns, body)
    assert relabelled.metadata.generation == 1 and relabelled.metadata.labels == {"x": "y"}
    stale = deployment("d", replicas=3)
    stale["metadata"]["resourceVersion"] = created.metadata.resource_version
    with pytest.raises(ApiException) as err:
        apps(api).replace_namespaced_deployment("d", ns, stale)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    scaled = apps(api).replace_namespaced_deployment("d", ns, deployment("d", replicas=3))
    assert scaled.metadata.generation == 2 and scaled.spec.replicas == 3
    assert scaled.metadata.uid == created.metadata.uid


def test_status_subresource_is_separate(api: kubernetes.client.ApiClient, ns: str) -> None:
    apps(api).create_namespaced_deployment(ns, deployment("d"))
    apps(api).patch_namespaced_deployment("d", ns, {"status": {"readyReplicas": 5}})
    assert apps(api).read_namespaced_deployment("d", ns).status is None  # main endpoint ignores it
    patched = apps(api).patch_namespaced_deployment_status(
        "d", ns, {"status": {"readyReplicas": 1}, "spec": {"replicas": 7}})
    assert patched.status.ready_replicas == 1 and patched.spec.replicas == 1  # /status ignores spec
    assert patched.metadata.generation == 1


def test_noop_patch_keeps_resource_version(api: kubernetes.client.ApiClient, ns: str) -> None:
    before = core(api).create_namespaced_config_map(ns, cm("a"))
    after = core(api).patch_namespaced_config_map("a", ns, {"data": {"k": "v"}})
    assert after.metadata.resource_version == before.metadata.resource_version


def test_merge_patch_and_strategic_patch(api: kubernetes.client.ApiClient, ns: str) -> None:
    core(api).create_namespaced_config_map(ns, cm("a", {"keep": "1", "drop": "2"}))
    status, obj = raw(api, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/a",
                      {"metadata": {"labels": {"drop": None, "new": "3"}}}, "application/merge-patch+json")
    assert status == 200 and obj["metadata"]["labels"] == {"keep": "1", "new": "3"}
    patched = apps(api).create_namespaced_deployment(ns, deployment("d"))
    patched = apps(api).patch_namespaced_deployment("d", ns, {"spec": {"replicas": 4}})  # strategic
    assert patched.spec.replicas == 4 and patched.spec.template.spec.containers[0].image == "busybox"
    path = f"/api/v1/namespaces/{ns}/configmaps/a"
    status, _ = raw(api, "PATCH", path, "x: 1", "application/apply-patch+yaml")
    assert status == 415


def test_json_patch_with_failed_test_is_422(api: kubernetes.client.ApiClient, ns: str) -> None:
    obj = core(api).create_namespaced_config_map(ns, cm("a"))
    path = f"/api/v1/namespaces/{ns}/configmaps/a"
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
             {"op": "add", "path": "/data/x", "value": "y"}]
    status, body = raw(api, "PATCH", path, stale, "application/json-patch+json")
    assert status == 422 and body["code"] == 422
    fresh = [{"op": "test", "path": "/metadata/resourceVersion", "value": obj.metadata.resource_version},
             {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]
    status, body = raw(api, "PATCH", path, fresh, "application/json-patch+json")
    assert status == 200 and body["metadata"]["finalizers"] == ["f"]


def test_label_and_field_selectors(api: kubernetes.client.ApiClient, ns: str) -> None:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {})]:
        core(api).create_namespaced_config_map(ns, cm(name, labels))

    def names(**kwargs: Any) -> list[str]:
        return [i.metadata.name for i in core(api).list_namespaced_config_map(ns, **kwargs).items]

    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app in (x, y)") == ["a", "b"]
    assert names(label_selector="app notin (x)") == ["b", "c"]
    assert names(label_selector="app,!tier") == ["b"]
    assert names(field_selector="metadata.name=c") == ["c"]


def test_list_carries_resource_version_and_kind(api: kubernetes.client.ApiClient, ns: str) -> None:
    created = core(api).create_namespaced_config_map(ns, cm("a"))
    _, body = raw(api, "GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert int(body["metadata"]["resourceVersion"]) >= int(created.metadata.resource_version)


def test_watch_from_a_resource_version_is_gap_free(api: kubernetes.client.ApiClient, ns: str) -> None:
    core(api).create_namespaced_config_map(ns, cm("old"))
    since = core(api).list_namespaced_config_map(ns).metadata.resource_version
    core(api).create_namespaced_config_map(ns, cm("a"))
    core(api).patch_namespaced_config_map("a", ns, {"data": {"k": "2"}})
    core(api).delete_namespaced_config_map("a", ns)
    events = list(kubernetes.watch.Watch().stream(
        core(api).list_namespaced_config_map, ns, resource_version=since, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and versions[0] > int(since)


def test_watch_without_version_lists_then_streams_live(server: EmulatorThread,
                                                       api: kubernetes.client.ApiClient, ns: str) -> None:
    core(api).create_namespaced_config_map(ns, cm("a"))
    watch = kubernetes.watch.Watch()
    stream = watch.stream(core(api).list_namespaced_config_map, ns, timeout_seconds=5)
    first = next(stream)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "a")
    with server.api_client() as other:
        core(other).create_namespaced_config_map(ns, cm("b"))
    second = next(stream)
    watch.stop()
    assert (second["type"], second["object"].metadata.name) == ("ADDED", "b")


def test_watch_from_an_expired_version_is_410() -> None:
    with EmulatorThread(watch_cache_size=3) as small, small.api_client() as api:
        first = core(api).create_namespaced_config_map("default", cm("a"))
        for i in range(5):
            core(api).patch_namespaced_config_map("a", "default", {"data": {"k": str(i)}})
        _, body = raw(api, "GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion="
                      f"{first.metadata.resource_version}&timeoutSeconds=1")
    assert body["type"] == "ERROR" and body["object"]["code"] == 410


def test_finalizers_keep_a_deleted_object_until_removed(api: kubernetes.client.ApiClient, ns: str) -> None:
    core(api).create_namespaced_config_map(ns, cm("a", finalizers=["x/y"]))
    core(api).delete_namespaced_config_map("a", ns)
    kept = core(api).read_namespaced_config_map("a", ns)
    assert kept.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:
        core(api).patch_namespaced_config_map("a", ns, {"metadata": {"finalizers": ["x/y", "z"]}})
    assert err.value.status == 422
    status, _ = raw(api, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/a",
                    {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert status == 200
    with pytest.raises(ApiException) as gone:
        core(api).read_namespaced_config_map("a", ns)
    assert gone.value.status == 404


def owned_by(owner: Any, kind: str = "ConfigMap") -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": kind, "name": owner.metadata.name, "uid": owner.metadata.uid,
             "controller": True}]


def test_garbage_collection_cascades_by_owner_uid(api: kubernetes.client.ApiClient, ns: str) -> None:
    owner = core(api).create_namespaced_config_map(ns, cm("owner"))
    child = core(api).create_namespaced_config_map(ns, cm("child", ownerReferences=owned_by(owner)))
    core(api).create_namespaced_config_map(ns, cm("grandchild", ownerReferences=owned_by(child)))
    other = core(api).create_namespaced_config_map(ns, cm("other"))
    shared = owned_by(owner) + owned_by(other)
    shared[1]["controller"] = False
    core(api).create_namespaced_config_map(ns, cm("shared", ownerReferences=shared))
    core(api).delete_namespaced_config_map("owner", ns)
    left = {i.metadata.name: i for i in core(api).list_namespaced_config_map(ns).items}
    assert sorted(left) == ["other", "shared"]
    assert [r.uid for r in left["shared"].metadata.owner_references] == [other.metadata.uid]


def test_orphan_propagation_and_dangling_owners(api: kubernetes.client.ApiClient, ns: str) -> None:
    owner = core(api).create_namespaced_config_map(ns, cm("owner"))
    core(api).create_namespaced_config_map(ns, cm("child", ownerReferences=owned_by(owner)))
    core(api).delete_namespaced_config_map("owner", ns, propagation_policy="Orphan")
    assert not core(api).read_namespaced_config_map("child", ns).metadata.owner_references
    core(api).create_namespaced_config_map(ns, cm("dangling", ownerReferences=owned_by(owner)))
    names = [i.metadata.name for i in core(api).list_namespaced_config_map(ns).items]
    assert names == ["child"]  # the owner uid no longer exists: collected at once


def test_delete_preconditions_and_collection(api: kubernetes.client.ApiClient, ns: str) -> None:
    for name in "abc":
        core(api).create_namespaced_config_map(ns, cm(name, {"group": "1" if name != "c" else "2"}))
    with pytest.raises(ApiException) as err:
        core(api).delete_namespaced_config_map("a", ns, body={"preconditions": {"uid": "wrong"}})
    assert err.value.status == 409
    core(api).delete_collection_namespaced_config_map(ns, label_selector="group=1")
    assert [i.metadata.name for i in core(api).list_namespaced_config_map(ns).items] == ["c"]


def test_deleting_a_namespace_deletes_its_objects(api: kubernetes.client.ApiClient, ns: str) -> None:
    core(api).create_namespaced_config_map(ns, cm("a"))
    core(api).delete_namespace(ns)
    assert core(api).list_namespaced_config_map(ns).items == []


def test_discovery_lists_builtin_kuberay_and_registered_crds(api: kubernetes.client.ApiClient) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    status, _ = raw(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    groups = {g.name for g in kubernetes.client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "ray.io", "example.com", "apiextensions.k8s.io"} <= groups
    core_names = {r.name for r in core(api).get_api_resources().resources}
    assert {"namespaces", "configmaps", "services", "events", "pods/status"} <= core_names
    _, ray = raw(api, "GET", "/apis/ray.io/v1")
    assert {r["name"]: r["kind"] for r in ray["resources"]}["rayjobs"] == "RayJob"
    _, widgets = raw(api, "GET", "/apis/example.com/v1")
    assert {r["name"] for r in widgets["resources"]} == {"widgets", "widgets/status"}
    widget = custom(api).create_namespaced_custom_object("example.com", "v1", "default", "widgets",
                                                         {"metadata": {"name": "w"}, "spec": {"size": 1}})
    assert widget["kind"] == "Widget" and widget["apiVersion"] == "example.com/v1"


def test_unknown_resource_is_404(api: kubernetes.client.ApiClient) -> None:
    status, _ = raw(api, "GET", "/apis/example.org/v1/namespaces/default/gizmos")
    assert status == 404


def test_requests_are_recorded_with_rbac_verbs(server: EmulatorThread,
                                               api: kubernetes.client.ApiClient, ns: str) -> None:
    start = len(server.emu.calls)
    core(api).create_namespaced_config_map(ns, cm("a"))
    core(api).read_namespaced_config_map("a", ns)
    core(api).patch_namespaced_config_map("a", ns, {"data": {"x": "y"}})
    core(api).delete_namespaced_config_map("a", ns)
    calls = [(c.verb, c.resource, c.namespace, c.name, c.status) for c in server.emu.calls[start:]]
    assert calls == [("create", "configmaps", ns, "a", 201), ("get", "configmaps", ns, "a", 200),
                     ("patch", "configmaps", ns, "a", 200), ("delete", "configmaps", ns, "a", 200)]


def test_faults_before_and_after_the_request(server: EmulatorThread,
                                             api: kubernetes.client.ApiClient, ns: str) -> None:
    race = server.emu.inject(Fault("create", "configmaps", namespace=ns, status=409,
                                   reason="AlreadyExists", after=True))
    with pytest.raises(ApiException) as err:
        core(api).create_namespaced_config_map(ns, cm("raced"))
    assert err.value.status == 409 and race.hits == 1
    assert core(api).read_namespaced_config_map("raced", ns).metadata.name == "raced"  # it was created
    server.emu.inject(Fault("create", "configmaps", namespace=ns, status=500))
    with pytest.raises(ApiException) as failed:
        core(api).create_namespaced_config_map(ns, cm("lost"))
    assert failed.value.status == 500
    core(api).create_namespaced_config_map(ns, cm("later"))  # faults are used up
    names = sorted(i.metadata.name for i in core(api).list_namespaced_config_map(ns).items)
    assert names == ["later", "raced"]


def test_wait_for_times_out_with_a_message() -> None:
    assert wait_for(lambda: 3, timeout=1) == 3
    with pytest.raises(AssertionError, match="the moon"):
        wait_for(lambda: False, timeout=0.1, what="the moon")


# --- the pure helpers -----------------------------------------------------------------------------

def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3}, "l": [2]}


def test_json_patch_ops() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}])["a"] == [1, 2, 3]
    assert json_patch(doc, [{"op": "replace", "path": "/b/c", "value": 5}])["b"] == {"c": 5}
    assert json_patch(doc, [{"op": "move", "from": "/b/c", "path": "/d"}]) == {"a": [1, 2], "b": {}, "d": 1}
    assert json_patch(doc, [{"op": "copy", "from": "/a/0", "path": "/e"}])["e"] == 1
    assert json_patch(doc, [{"op": "remove", "path": "/a/0"}])["a"] == [2]
    assert doc == {"a": [1, 2], "b": {"c": 1}}  # the input is never mutated
    with pytest.raises(PatchError) as err:
        json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    assert err.value.status == 422
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/zzz"}])


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("", {}, True), ("a=b", {"a": "b"}, True), ("a==b", {"a": "c"}, False), ("a!=b", {}, True),
    ("a in (b,c)", {"a": "c"}, True), ("a notin (b,c)", {"a": "c"}, False), ("a", {"a": ""}, True),
    ("!a", {"a": "x"}, False), ("a=b,c in (d)", {"a": "b", "c": "d"}, True),
    ("nexrl.io/job=x", {"nexrl.io/job": "x"}, True),
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected
