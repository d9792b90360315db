"""Pure parts of the box's kubelet and KubeRay stand-ins: what a pod runs, with what env, and what
KubeRay puts on a Ray node's command line; the /etc/hosts that stands in for cluster DNS.

Data in, data out (manifest dicts), so they are tested without namespaces or processes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Manifest = dict[str, Any]
DOMAIN = "cluster.local"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: a defined VAR is replaced, an undefined one is left as is,
    `$$` escapes a `$` (so `$$(VAR)` stays `$(VAR)`)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(one, text)


def field_ref(path: str, pod: Manifest, pod_ip: str, host_ip: str) -> str:
    """The value of an env `valueFrom.fieldRef.fieldPath` for this pod (the paths kubelet serves)."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", "box"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ValueError(f"env fieldRef.fieldPath {path!r} is not one kubelet serves")


def container_env(
    container: Manifest,
    pod: Manifest,
    pod_ip: str,
    host_ip: str,
    config_value: Callable[[str, str], str | None],
    base: Mapping[str, str] = {},
) -> dict[str, str]:
    """The container's environment as kubelet builds it: `base` (image env, Service variables),
    then `env` in order, each value `$(VAR)`-expanded against what is defined before it."""
    env = dict(base)
    for item in container.get("env") or ():
        name, source = item["name"], item.get("valueFrom")
        if source is None:
            env[name] = expand(str(item.get("value", "")), env)
        elif "fieldRef" in source:
            env[name] = field_ref(source["fieldRef"]["fieldPath"], pod, pod_ip, host_ip)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = config_value(ref["name"], ref["key"])
            if value is None and not ref.get("optional"):
                raise ValueError(f"env {name}: configMap {ref['name']} has no key {ref['key']!r}")
            env[name] = value or ""
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            env[name] = resource_field(container, ref["resource"], ref.get("divisor"))
        else:
            raise ValueError(f"env {name}: valueFrom {sorted(source)} is not served by the box's kubelet")
    return env


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (`500m` -> 0.5, `4Gi` -> 4 * 2**30)."""
    text = str(value)
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    for suffix, factor in binary.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    if text and text[-1] in decimal:
        return float(text[:-1]) * decimal[text[-1]]
    return float(text)


def resource_field(container: Manifest, resource: str, divisor: str | None) -> str:
    """`resourceFieldRef` (e.g. `limits.cpu`), rounded up in units of `divisor` as kubelet does."""
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        return "0"
    return str(math.ceil(quantity(value) / quantity(divisor or "1")))


def argv(
    container: Manifest, env: Mapping[str, str], entrypoint: Sequence[str] = (), cmd: Sequence[str] = ()
) -> list[str]:
    """What the container runs: `command` (else the image's ENTRYPOINT) + `args` (else the image's
    CMD, only when `command` is not set), `$(VAR)`-expanded."""
    command = container.get("command")
    args = container.get("args")
    if command is None:
        words = [*entrypoint, *(args if args is not None else cmd)]
    else:
        words = [*command, *(args or ())]
    if not words:
        raise ValueError(f"container {container.get('name')!r} has no command and its image no entrypoint")
    return [expand(str(word), env) for word in words]


def _resource(container: Manifest, kind: str, predicate: Callable[[str], bool]) -> float | None:
    values = (container.get("resources") or {}).get(kind) or {}
    found = [quantity(v) for k, v in values.items() if predicate(k)]
    return sum(found) if found else None


def ray_start_args(
    container: Manifest, params: Mapping[str, Any], head: bool, head_address: str, node_ip: str
) -> list[str]:
    """`ray start` as KubeRay writes it for a head or worker container: the group's rayStartParams as
    `--key=value`, `--num-cpus` / `--memory` from the CPU and memory limits (else requests),
    `--num-gpus` from the limits of `*gpu` resources (e.g. `nvidia.com/gpu`), `--block`."""
    words = ["ray", "start", "--head" if head else f"--address={head_address}"]
    given = {str(k): v for k, v in params.items()}
    derived: dict[str, Any] = {}
    cpu = _resource(container, "limits", lambda k: k == "cpu") or _resource(
        container, "requests", lambda k: k == "cpu"
    )
    if cpu:
        derived["num-cpus"] = math.ceil(cpu)
    memory = _resource(container, "limits", lambda k: k == "memory") or _resource(
        container, "requests", lambda k: k == "memory"
    )
    if memory:
        derived["memory"] = int(memory)
    gpus = _resource(container, "limits", lambda k: k.endswith("gpu"))
    if gpus:
        derived["num-gpus"] = math.ceil(gpus)
    derived["node-ip-address"] = node_ip
    if head:
        derived.update({"port": 6379, "dashboard-agent-listen-port": 52365})
    for key, value in {**derived, **given}.items():
        if key != "block":
            words.append(f"--{key}={value}")
    words.append("--block")
    return words


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service/workload selector (matchLabels-style map) matches these labels."""
    return bool(selector) and all((labels or {}).get(k) == v for k, v in (selector or {}).items())


def service_names(name: str, namespace: str) -> list[str]:
    """The DNS names of a Service (the forms a pod's search path resolves)."""
    return [f"{name}.{namespace}.svc.{DOMAIN}", f"{name}.{namespace}.svc", f"{name}.{namespace}", name]


def hosts_file(
    services: Iterable[Manifest], pods: Iterable[Mapping[str, Any]], extra: Mapping[str, str] = {}
) -> str:
    """An /etc/hosts for every pod: each Service name -> the IPs of its ready pods (all of them, for a
    headless Service as for a ClusterIP one: the box has no virtual IPs, see docs/box.md); each pod's
    hostname (and `<hostname>.<subdomain>` for StatefulSet pods) -> its IP; `extra` name -> IP.

    `pods`: dicts with name, namespace, labels, ip, ready, hostname, subdomain."""
    pods = list(pods)
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host, ip in extra.items():
        lines.append(f"{ip}\t{host}")
    for pod in pods:
        names = [pod["hostname"]]
        if pod.get("subdomain"):
            names[:0] = [
                f"{pod['hostname']}.{n}" for n in service_names(pod["subdomain"], pod["namespace"])[:3]
            ]
        lines.append(f"{pod['ip']}\t{' '.join(names)}")
    for service in services:
        meta, spec = service["metadata"], service.get("spec") or {}
        ips = [
            p["ip"]
            for p in pods
            if p["ready"]
            and p["namespace"] == meta["namespace"]
            and selects(spec.get("selector"), p["labels"])
        ]
        names = " ".join(service_names(meta["name"], meta["namespace"]))
        lines.extend(f"{ip}\t{names}" for ip in sorted(ips, key=_ip_key))
    return "\n".join(lines) + "\n"


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(part) for part in ip.split("."))
