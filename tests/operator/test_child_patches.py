"""child_patches.py: ownership, adoption, and the fields we patch live."""

from __future__ import annotations

from typing import Any

from nexrl_operator.child_patches import (
    Ownership,
    adoption_patch,
    describe_patch,
    live_patch,
    ownership,
    scale_to_zero,
)

OURS = {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob", "name": "j", "uid": "u1", "controller": True}


def obj(kind: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", **meta}, "spec": spec or {}}


def test_ownership() -> None:
    assert ownership(obj("ConfigMap", ownerReferences=[OURS]), "u1", "j") is Ownership.OWNED
    orphan = obj("ConfigMap", labels={"nexrl.io/job": "j"})
    assert ownership(orphan, "u1", "j") is Ownership.ADOPTABLE
    other_job = obj("ConfigMap", labels={"nexrl.io/job": "j"}, ownerReferences=[{**OURS, "uid": "old"}])
    assert ownership(other_job, "u1", "j") is Ownership.FOREIGN  # an earlier job's, still being collected
    assert ownership(obj("ConfigMap"), "u1", "j") is Ownership.FOREIGN
    assert ownership(obj("ConfigMap", labels={"nexrl.io/job": "k"}), "u1", "j") is Ownership.FOREIGN


def test_adoption_keeps_other_non_controller_owners() -> None:
    helper = {"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "s1"}
    existing = obj("ConfigMap", ownerReferences=[helper], labels={"nexrl.io/job": "j", "keep": "me"})
    desired = obj("ConfigMap", ownerReferences=[OURS], labels={"nexrl.io/job": "j", "app": "nexrl"})
    assert adoption_patch(existing, desired) == {"metadata": {
        "ownerReferences": [helper, OURS], "labels": {"nexrl.io/job": "j", "app": "nexrl"}}}


def test_live_patch_touches_only_owned_fields() -> None:
    deployment = obj("Deployment", {"replicas": 1, "template": {"x": 1}})
    assert live_patch(deployment, obj("Deployment", {"replicas": 3, "template": {"x": 2}})) == {
        "spec": {"replicas": 3}}
    assert live_patch(deployment, obj("Deployment", {"replicas": 1, "template": {"x": 2}})) == {}
    rayjob = obj("RayJob", {"suspend": False, "entrypoint": "a"})
    suspended = obj("RayJob", {"suspend": True, "entrypoint": "b"})
    assert live_patch(rayjob, suspended) == {"spec": {"suspend": True}}
    queued = obj("RayJob", {"suspend": True}, labels={"kueue.x-k8s.io/queue-name": "q"})
    assert live_patch(queued, obj("RayJob", {"suspend": False})) == {}  # Kueue owns spec.suspend


def test_live_patch_of_config_data_unless_frozen() -> None:
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "old": "x"}}
    want = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2", "new": "y"}}
    assert live_patch(config, want) == {"data": {"a": "2", "new": "y", "old": None}}
    assert live_patch(config, want, config_frozen=True) == {}
    assert live_patch(config, config) == {}
    assert live_patch(obj("Service", {"ports": [1]}), obj("Service", {"ports": [2]})) == {}


def test_scale_to_zero() -> None:
    assert scale_to_zero(obj("StatefulSet", {"replicas": 2})) == {"spec": {"replicas": 0}}
    assert scale_to_zero(obj("StatefulSet", {"replicas": 0})) == {}
    assert scale_to_zero(obj("RayJob", {"suspend": False})) == {}


def test_describe_patch() -> None:
    assert describe_patch({"spec": {"replicas": 3}}) == "spec.replicas=3"
    long_value = {"data": {"cluster.yaml": "x" * 60, "old": None}}
    assert describe_patch(long_value) == "data.cluster.yaml, data.old=null"
