"""Deterministic child names, and the longest job name for which every one of them is legal.

Each child is `<job><suffix>`; each has its own limit, and the job-name limit is the tightest:

* RayJob `<job>`: KubeRay rejects RayJob names over 47 characters (`MaxRayJobNameLength` =
  `MaxRayClusterNameLength` 53 - 6) because it names the RayCluster `<rayjob>-<5 random>` and
  that cluster's Services `<cluster>-head-svc` / `-serve-svc`, which must stay within 63. KubeRay
  also requires a DNS-1035 label (starts with a letter, no dots).
* StatefulSet `<job>-trainer`: its pods carry `controller-revision-hash=<sts>-<10-char hash>`,
  a label value (<= 63), so the StatefulSet name may have at most 52 characters -> job <= 44.
* Services `<job>-inference` / `<job>-trainer`: DNS-1035 labels (<= 63) -> job <= 53.
* ConfigMap, Deployment, PVC: DNS-1123 subdomains (<= 253); never the binding limit.

Hence MAX_JOB_NAME_LENGTH = 44. The CRD enforces it (and DNS-1035) with a CEL rule on
`metadata.name`; `spec_checks.validate_job` checks it too, for API servers without CEL.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class NameLimit(NamedTuple):
    """One child's naming rule: the suffix it adds and the longest name it may have."""

    role: str
    suffix: str
    limit: int
    why: str


NAME_LIMITS: tuple[NameLimit, ...] = (
    NameLimit("config", "-config", 253, "ConfigMap name: DNS-1123 subdomain"),
    NameLimit("rayjob", "", 47, "KubeRay MaxRayJobNameLength (RayCluster <rayjob>-xxxxx <= 53)"),
    NameLimit("inference", "-inference", 63, "Service name: DNS-1035 label"),
    NameLimit("trainer", "-trainer", 52, "StatefulSet: controller-revision-hash label <sts>-<hash> <= 63"),
    NameLimit("storage", "-data", 253, "PersistentVolumeClaim name: DNS-1123 subdomain"),
)

MAX_JOB_NAME_LENGTH: int = min(rule.limit - len(rule.suffix) for rule in NAME_LIMITS)

CEL_NAME_RULES: tuple[dict[str, str], ...] = (
    {
        "rule": f"self.metadata.name.size() <= {MAX_JOB_NAME_LENGTH}",
        "message": f"metadata.name must be at most {MAX_JOB_NAME_LENGTH} characters "
        "(child names such as <name>-trainer must fit Kubernetes and KubeRay limits)",
    },
    {
        "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "message": "metadata.name must be a DNS-1035 label (lower case letters, digits, '-'; "
        "starts with a letter), as KubeRay requires for the RayJob",
    },
)


def child_names(name: str) -> dict[str, str]:
    """Role -> object name of every child a job may have (the Deployment and its Service share one)."""
    return {rule.role: f"{name}{rule.suffix}" for rule in NAME_LIMITS}


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a NexRLJob name, or None when it can."""
    if len(name) > MAX_JOB_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_JOB_NAME_LENGTH} are allowed"
    if not DNS1035_LABEL.match(name):
        return "must be a DNS-1035 label: lower case letters, digits and '-', starting with a letter"
    return None
