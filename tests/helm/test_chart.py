"""The Helm chart with a real helm: lint, render, schema-valid manifests, values checked at install."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helmchart import CHART, FULLNAME, NAMESPACE, REPO, Helm, Manifest, deployment_args, find
from nexrl_operator.main import add_arguments, operator_defaults
from nexrl_operator.quota_api import NexRLQuotaSpec

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-namespace": {"watchNamespaces": ["team-a", "team-b"]},
    "metrics": {"metrics": {"enabled": True,
                            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                "runtime": {"namespaces": ["team-a", "team-b"],
                            "podMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "custom-images": {
        "image": {"repository": "registry.example.com/ml/nexrl-operator", "tag": "0.2.0-rc1",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "runtime": {"inferenceImage": "vllm/vllm-openai:v0.33.0", "serviceAccount": {"name": "trainer-bot"},
                    "namespaces": ["ml", "ml-dev"]},
    },
    "system-pool": {
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "podAnnotations": {"example.com/team": "ml-platform"},
        "operator": {"statusInterval": 2.5, "verbose": True},
    },
    "bring-your-own-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"},
                            "runtime": {"serviceAccount": {"create": False}}},
}
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"watchNamespace": ["team-a"]}, "'watchNamespace' not allowed"),
    ({"runtime": {"namespaces": ["Team A"]}}, "/runtime/namespaces/0"),
    ({"image": {"repository": ""}}, "/image/repository"),
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"operator": {"statusInterval": 0}}, "/operator/statusInterval"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"runtime": {"podMonitor": {"enabled": "yes"}}}, "/runtime/podMonitor/enabled"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ({"resources": {"limit": {"cpu": 1}}}, "'limit' not allowed"),
]
NOT_CORE = {"ServiceMonitor", "PodMonitor", "NexRLQuota"}  # CRD kinds that kubernetes-validate does not know
QUOTA = {"create": True, "name": "cluster", "spec": {"gpus": 16, "maxGpusPerJob": 8}}


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, helm: Helm) -> tuple[dict[str, Any], list[Manifest]]:
    values = VALUE_SETS[request.param]
    return values, helm.template(values)


def validate_quota(obj: Manifest) -> None:
    """A NexRLQuota against the chart's CRD, and its spec against the operator's model (no unknown keys)."""
    (crd,) = [doc for path in (CHART / "crds").glob("*.yaml")
              if (doc := yaml.safe_load(path.read_text()))["spec"]["names"]["kind"] == obj["kind"]]
    group = crd["spec"]["group"]
    (version,) = [v for v in crd["spec"]["versions"] if f"{group}/{v['name']}" == obj["apiVersion"]]
    jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])
    NexRLQuotaSpec.model_validate(obj["spec"])


def _parse_args(manifests: list[Manifest]) -> argparse.Namespace:
    args = deployment_args(manifests)
    assert args[0] == "run", args
    return add_arguments(argparse.ArgumentParser()).parse_args(args[1:])


def test_chart_ships_exactly_the_generated_crds() -> None:
    generated = {path.name: path.read_text() for path in (REPO / "crds").glob("*.yaml")}
    shipped = {path.name: path.read_text() for path in (CHART / "crds").glob("*.yaml")}
    assert generated, "no CRDs in crds/"
    assert shipped == generated, "the chart's crds/ differs from crds/: run scripts/sync_chart_crds.sh"


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(helm: Helm, name: str) -> None:
    done = helm.run("lint", "--strict", str(CHART), values=VALUE_SETS[name])
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendered_manifests_are_valid(rendered: tuple[dict[str, Any], list[Manifest]],
                                      validate: Callable[[Manifest], None]) -> None:
    _, manifests = rendered
    for obj in manifests:
        if obj["kind"] not in NOT_CORE:
            validate(obj)
    namespaced = [m for m in manifests if m["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert all(m["metadata"].get("namespace") for m in namespaced), "namespaced objects name their namespace"


def test_crds_render_and_validate(helm: Helm, validate: Callable[[Manifest], None]) -> None:
    crds = find(helm.template({}, "--include-crds"), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} >= {"nexrljobs.nexrl.io"}
    for crd in crds:
        validate(crd)


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_fail_before_anything_is_created(helm: Helm, values: dict[str, Any], message: str) -> None:
    done = helm.run("template", "x", str(CHART), values=values)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_operator_pod_is_one_hardened_replica_with_kopf_liveness(
        rendered: tuple[dict[str, Any], list[Manifest]]) -> None:
    _, manifests = rendered
    (deployment,) = find(manifests, "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})  # never two standalone kopfs
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    hardened = container["securityContext"]
    assert hardened["readOnlyRootFilesystem"] and hardened["allowPrivilegeEscalation"] is False
    assert hardened["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    liveness = _parse_args(manifests).liveness
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness == f"http://0.0.0.0:{ports[probe['port']]}{probe['path']}" and probe["path"] == "/healthz"


def test_operator_arguments_are_the_operators_own_options(
        rendered: tuple[dict[str, Any], list[Manifest]]) -> None:
    values, manifests = rendered
    args = _parse_args(manifests)  # argparse exits on an unknown option
    assert args.namespace == values.get("watchNamespaces", [])
    metrics = values.get("metrics", {})
    assert args.metrics_port == (metrics.get("port", 9090) if metrics.get("enabled") else None)
    runtime = values.get("runtime", {})
    account = runtime.get("serviceAccount", {}).get("name", "nexrl-runtime")
    defaults = operator_defaults(args)
    assert defaults.service_account == account
    assert defaults.inference_image == runtime.get("inferenceImage")
    runtime_namespaces = runtime.get("namespaces") or values.get("watchNamespaces") or [NAMESPACE]
    created = {(a["metadata"]["namespace"], a["metadata"]["name"]) for a in find(manifests, "ServiceAccount")}
    if runtime.get("serviceAccount", {}).get("create", True):
        assert created >= {(ns, account) for ns in runtime_namespaces}


CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "nexrlquotas", "nexrlquotas/status"}


def _resources(rules: list[Manifest]) -> set[str]:
    return {resource for rule in rules for resource in rule["resources"]}


def test_single_namespace_mode_grants_only_the_watched_namespaces(helm: Helm) -> None:
    everywhere = helm.template({})
    single = helm.template(VALUE_SETS["single-namespace"])
    (cluster_wide,) = find(everywhere, "ClusterRole")
    (cluster_part,) = find(single, "ClusterRole")
    assert _resources(cluster_part["rules"]) == CLUSTER_SCOPED
    roles = {r["metadata"]["namespace"]: r["rules"] for r in find(single, "Role", FULLNAME)}
    assert roles.keys() == {"team-a", "team-b"}
    for rules in roles.values():  # the same permissions, the namespaced ones confined to one namespace
        assert not _resources(rules) & CLUSTER_SCOPED
        assert sorted(map(str, cluster_part["rules"] + rules)) == sorted(map(str, cluster_wide["rules"]))
    bindings = {b["metadata"]["namespace"] for b in find(single, "RoleBinding", FULLNAME)}
    assert bindings == {"team-a", "team-b"}


def test_without_quotas_the_operator_reads_no_cluster_wide_quotas_or_namespaces(helm: Helm) -> None:
    manifests = helm.template({"operator": {"quotas": False}})
    (role,) = find(manifests, "ClusterRole")
    assert _resources(role["rules"]) & CLUSTER_SCOPED == {"customresourcedefinitions"}
    assert _parse_args(manifests).quotas is False
    assert _parse_args(helm.template({})).quotas is True


def test_bring_your_own_rbac_renders_no_rbac(helm: Helm) -> None:
    manifests = helm.template(VALUE_SETS["bring-your-own-rbac"])
    assert {m["kind"] for m in manifests} == {"Deployment"}
    (deployment,) = find(manifests, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_metrics_service_and_service_monitor(helm: Helm) -> None:
    assert not find(helm.template({}), "Service")
    manifests = helm.template(VALUE_SETS["metrics"])
    (service,) = find(manifests, "Service")
    (monitor,) = find(manifests, "ServiceMonitor")
    (deployment,) = find(manifests, "Deployment")
    pod = deployment["spec"]["template"]
    container_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]


def test_pod_monitor_scrapes_the_heads_the_operator_builds(helm: Helm) -> None:
    """The chart's PodMonitor selects exactly the head pods the operator's RayJob asks for, by the
    port name the operator gives them, in the runtime namespaces."""
    from nexrl_operator.builders import build_children
    from nexrl_operator.spec_checks import parse_job

    assert not find(helm.template({}), "PodMonitor")
    (monitor,) = find(helm.template(VALUE_SETS["metrics"]), "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    spec = {"image": "nexrl/nexrl:0.1.0", "recipe": "/app/recipe/arithmetic/arithmetic.yaml",
            "inference": {"replicas": 0}}
    job = parse_job({"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob",
                     "metadata": {"name": "demo", "namespace": "team-a"}, "spec": spec})
    children = build_children(job, name="demo", namespace="team-a", uid="u-1")
    (rayjob,) = [c for c in children if c["kind"] == "RayJob"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    labels = head["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert all(e["key"] in labels for e in monitor["spec"]["selector"]["matchExpressions"])
    ports = {p["name"] for p in head["spec"]["containers"][0]["ports"]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"] and "metrics" in ports


def test_custom_images_and_pod_placement(helm: Helm) -> None:
    images = helm.template(VALUE_SETS["custom-images"])
    (deployment,) = find(images, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/ml/nexrl-operator:0.2.0-rc1"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    placed = helm.template(VALUE_SETS["system-pool"])
    (deployment,) = find(placed, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "priorityClassName"):
        assert pod[key] == VALUE_SETS["system-pool"][key]
    assert pod["containers"][0]["resources"] == VALUE_SETS["system-pool"]["resources"]


def test_default_quota_needs_the_quota_crd_in_the_chart(helm: Helm, tmp_path: Path) -> None:
    (quota,) = find(helm.template({"defaultQuota": QUOTA}), "NexRLQuota")
    assert (quota["metadata"]["name"], quota["spec"]) == ("cluster", QUOTA["spec"])
    validate_quota(quota)
    assert not find(helm.template({}), "NexRLQuota")
    chart = shutil.copytree(CHART, tmp_path / "nexrl-operator")
    for crd in (chart / "crds").glob("*.yaml"):
        if "kind: NexRLQuota" in crd.read_text():
            crd.unlink()
    assert not find(helm.template({"defaultQuota": QUOTA}, chart=chart), "NexRLQuota")


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("nexrlquota-*.yaml")), ids=lambda p: p.stem)
def test_quota_examples_are_valid(path: Path) -> None:
    validate_quota(yaml.safe_load(path.read_text()))
