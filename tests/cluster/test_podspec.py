"""The box's pure parts: $(VAR) expansion, env, argv, ray start from resources, the hosts file."""

from __future__ import annotations

import pytest
from kubelet import repository
from podspec import argv, container_env, expand, hosts_file, quantity, ray_start_args

POD = {"metadata": {"name": "p-0", "namespace": "ns", "labels": {"app": "x"}}, "spec": {}}


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)", env) == "1-two-$(C)"
    assert expand("$$(A) $$ $(A)", env) == "$(A) $ 1"


def test_env_in_order_with_field_refs_and_config_maps() -> None:
    container = {
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(IP):8000/$(NS)"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        ]
    }
    env = container_env(
        container, POD, "10.0.0.2", "10.0.0.1", lambda name, key: f"{name}/{key}", {"HOME": "/h"}
    )
    assert env == {
        "HOME": "/h",
        "IP": "10.0.0.2",
        "URL": "http://10.0.0.2:8000/$(NS)",
        "NS": "ns",
        "APP": "x",
        "K": "cm/k",
    }
    with pytest.raises(ValueError, match=r"fieldPath 'spec\.nope'"):
        container_env(
            {"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]},
            POD,
            "",
            "",
            lambda n, k: None,
        )


def test_argv_uses_image_entrypoint_and_cmd_as_kubelet_does() -> None:
    env = {"P": "80"}
    assert argv({"args": ["run", "--port=$(P)"]}, env, ("op",), ("default",)) == ["op", "run", "--port=80"]
    assert argv({}, env, ("op",), ("default",)) == ["op", "default"]
    assert argv({"command": ["sh"]}, env, ("op",), ("default",)) == ["sh"]
    with pytest.raises(ValueError, match="no command"):
        argv({"name": "c"}, env)


def test_ray_start_declares_gpus_from_limits() -> None:
    container = {
        "resources": {
            "limits": {"cpu": "1500m", "memory": "4Gi", "nvidia.com/gpu": 2},
            "requests": {"cpu": "1"},
        }
    }
    words = ray_start_args(container, {"dashboard-host": "0.0.0.0"}, True, "unused", "10.0.0.2")
    assert words == [
        "ray",
        "start",
        "--head",
        "--num-cpus=2",
        f"--memory={4 * 2**30}",
        "--num-gpus=2",
        "--node-ip-address=10.0.0.2",
        "--port=6379",
        "--dashboard-agent-listen-port=52365",
        "--dashboard-host=0.0.0.0",
        "--block",
    ]
    worker = ray_start_args({"resources": {"requests": {"cpu": "1"}}}, {}, False, "h:6379", "10.0.0.3")
    assert worker == [
        "ray",
        "start",
        "--address=h:6379",
        "--num-cpus=1",
        "--node-ip-address=10.0.0.3",
        "--block",
    ]


def test_quantities() -> None:
    assert (quantity("500m"), quantity("2Gi"), quantity("1k"), quantity(3)) == (0.5, 2 * 2**30, 1000.0, 3.0)


def test_hosts_file_lists_every_ready_pod_of_a_service() -> None:
    svc = {
        "metadata": {"name": "inf", "namespace": "ns"},
        "spec": {"clusterIP": "None", "selector": {"app": "x"}},
    }
    pods = [
        {
            "name": n,
            "namespace": "ns",
            "labels": {"app": "x"},
            "ip": ip,
            "ready": ready,
            "hostname": n,
            "subdomain": sub,
        }
        for n, ip, ready, sub in (
            ("a", "10.0.0.10", True, None),
            ("b", "10.0.0.9", True, None),
            ("c", "10.0.0.11", False, "inf"),
        )
    ]
    lines = hosts_file([svc], pods, {"kubernetes.default.svc": "10.0.0.1"}).splitlines()
    full = "inf.ns.svc.cluster.local inf.ns.svc inf.ns inf"
    assert lines[-2:] == [f"10.0.0.9\t{full}", f"10.0.0.10\t{full}"]  # the unready pod is not an endpoint
    assert "10.0.0.11\tc.inf.ns.svc.cluster.local c.inf.ns.svc c.inf.ns c" in lines
    assert "10.0.0.1\tkubernetes.default.svc" in lines


def test_repository_of_an_image_reference() -> None:
    assert repository("docker.io/vllm/vllm-openai:v0.33.0") == "vllm/vllm-openai"
    assert repository("nexrl/nexrl:0.1.0@sha256:abc") == "nexrl/nexrl"
    assert repository("localhost:5000/nexrl:test") == "nexrl"
