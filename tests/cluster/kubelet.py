"""The box's kubelet: runs pods in sandboxes (sandbox.py), probes their readiness, restarts what
exits under `restartPolicy: Always`, keeps the shared /etc/hosts (Service DNS) current, and plays
the Deployment and StatefulSet controllers, writing their status as kube-controller-manager does.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import pathlib
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

import podspec
import sandbox
from podspec import Manifest

log = logging.getLogger("box.kubelet")


@dataclasses.dataclass(frozen=True)
class Image:
    """What the box knows of an image: its ENTRYPOINT, CMD and ENV (Dockerfile), as kubelet would."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Node:
    """The node's facts every pod shares: paths and the API server's address."""

    root: pathlib.Path
    bridge: sandbox.Bridge
    api_port: int
    ca: pathlib.Path
    app: pathlib.Path
    base_env: Mapping[str, str]
    images: Mapping[str, Image]
    config_map: Callable[[str, str], Manifest | None]
    service_account: Callable[[str, str], bool]
    mounts: tuple[tuple[pathlib.Path, str], ...] = ()
    """host folder -> path in every container (the box's own additions, e.g. the vllm launcher)"""
    made: list[pathlib.Path] = dataclasses.field(default_factory=list)
    tokens: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def token(self, namespace: str, account: str) -> str:
        """The bearer token of a service account (one per account, as a projected token would be)."""
        return self.tokens.setdefault(
            (namespace, account), f"box.{namespace}.{account}.{secrets.token_hex(8)}"
        )


class Pod:
    """One running pod: a network namespace, a process per container, readiness from its probes."""

    def __init__(
        self, node: Node, manifest: Manifest, hostname: str | None = None, subdomain: str | None = None
    ) -> None:
        self.node, self.manifest = node, manifest
        meta = manifest["metadata"]
        self.name, self.namespace = meta["name"], meta["namespace"]
        self.labels: dict[str, str] = dict(meta.get("labels") or {})
        self.hostname, self.subdomain = hostname or self.name, subdomain
        self.spec: Manifest = manifest["spec"]
        self.restart_policy = self.spec.get("restartPolicy", "Always")
        self.dir = node.root / "pods" / f"{self.namespace}.{self.name}"
        self.netns, self.ip = node.bridge.add_netns(self.name)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self._restart_at: dict[str, float] = {}
        self.ready = False
        self.exit_codes: dict[str, int] = {}
        self.started = time.monotonic()
        try:
            self._mounts = self._volumes()
            for container in self.spec["containers"]:
                self._start(container)
        except BaseException:
            self.stop()
            raise

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels,
            "ip": self.ip,
            "ready": self.ready,
            "hostname": self.hostname,
            "subdomain": self.subdomain,
        }

    def log_path(self, container: str) -> pathlib.Path:
        return self.dir / f"{container}.log"

    def _volumes(self) -> dict[str, pathlib.Path]:
        """Host folders of the pod's volumes: ConfigMap files, the PVC's folder, emptyDirs, the token."""
        out: dict[str, pathlib.Path] = {}
        for volume in self.spec.get("volumes") or ():
            name, path = volume["name"], self.dir / "volumes" / volume["name"]
            if "configMap" in volume:
                cm = self.node.config_map(self.namespace, volume["configMap"]["name"])
                if cm is None and not volume["configMap"].get("optional"):
                    raise RuntimeError(f"pod {self.name}: configMap {volume['configMap']['name']} not found")
                path.mkdir(parents=True, exist_ok=True)
                items = volume["configMap"].get("items")
                data = (cm or {}).get("data") or {}
                for key, value in data.items():
                    target = next((i["path"] for i in items or () if i["key"] == key), None if items else key)
                    if target:
                        (path / target).parent.mkdir(parents=True, exist_ok=True)
                        (path / target).write_text(value)
            elif "persistentVolumeClaim" in volume:
                path = self.node.root / "pvc" / self.namespace / volume["persistentVolumeClaim"]["claimName"]
                path.mkdir(parents=True, exist_ok=True)
            elif "emptyDir" in volume:
                path.mkdir(parents=True, exist_ok=True)
            else:
                raise RuntimeError(
                    f"pod {self.name}: volume {name} kind {sorted(volume)} is not served by the box"
                )
            out[name] = path
        account = self.spec.get("serviceAccountName") or "default"
        if not self.node.service_account(self.namespace, account):
            raise RuntimeError(f"pod {self.name}: serviceaccount {self.namespace}/{account} not found")
        sa = self.dir / "serviceaccount"
        sa.mkdir(parents=True, exist_ok=True)
        (sa / "token").write_text(self.node.token(self.namespace, account))
        (sa / "namespace").write_text(self.namespace)
        (sa / "ca.crt").write_bytes(self.node.ca.read_bytes())
        out["__serviceaccount"] = sa
        home = self.dir / "home"  # the image user's home: the pod's own (~/.ray, caches), never the host's
        home.mkdir(exist_ok=True)
        out["__home"] = home
        return out

    def _image(self, container: Manifest) -> Image:
        return self.node.images.get(repository(container.get("image", "")), Image())

    def _start(self, container: Manifest) -> None:
        image = self._image(container)
        node = self.node
        base = {
            **node.base_env,
            **image.env,
            "HOSTNAME": self.hostname,
            "KUBERNETES_SERVICE_HOST": node.bridge.host_ip,
            "KUBERNETES_SERVICE_PORT": str(node.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(node.api_port),
        }
        env = podspec.container_env(
            container, self.manifest, self.ip, node.bridge.host_ip, self._config_value, base
        )
        words = podspec.argv(container, env, image.entrypoint, image.cmd)
        root = node.root / "node"
        mounts = [
            sandbox.Mount(root / "hosts", "/etc/hosts"),
            sandbox.Mount(root / "resolv.conf", "/etc/resolv.conf"),
            sandbox.Mount(root / "host.conf", "/etc/host.conf"),
            sandbox.Mount(node.app, "/app"),
            sandbox.Mount(self._mounts["__home"], "/home/nexrl"),
            sandbox.Mount(
                self._mounts["__serviceaccount"],
                "/var/run/secrets/kubernetes.io/serviceaccount",
                read_only=True,
            ),
        ]
        mounts += [sandbox.Mount(source, target, read_only=True) for source, target in node.mounts]
        for mount in container.get("volumeMounts") or ():
            source = self._mounts[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append(sandbox.Mount(source, mount["mountPath"], bool(mount.get("readOnly"))))
        script = self.dir / f"{container['name']}.sh"
        script.write_text(
            sandbox.container_script(
                words, env, mounts, self.hostname, container.get("workingDir") or "/app", node.made
            )
        )
        self.procs[container["name"]] = sandbox.start_container(
            self.netns, script, self.log_path(container["name"])
        )

    def _config_value(self, name: str, key: str) -> str | None:
        cm = self.node.config_map(self.namespace, name)
        return ((cm or {}).get("data") or {}).get(key)

    def tick(self) -> None:
        """Restart exited containers (restartPolicy Always, with back-off), then probe readiness."""
        for container in self.spec["containers"]:
            proc = self.procs[container["name"]]
            code = proc.poll()
            if code is None:
                continue
            self.exit_codes[container["name"]] = code
            if self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0):
                due = self._restart_at.setdefault(
                    container["name"], time.monotonic() + min(10, 2**self.restarts)
                )
                if time.monotonic() >= due:
                    log.warning(
                        "pod %s/%s container %s exited %s: restarting",
                        self.namespace,
                        self.name,
                        container["name"],
                        code,
                    )
                    self.restarts += 1
                    del self._restart_at[container["name"]]
                    sandbox.kill_netns(self.netns, grace=0.5) if len(self.procs) == 1 else None
                    self._start(container)
        self.ready = self.running and all(self._probe(c) for c in self.spec["containers"])

    @property
    def running(self) -> bool:
        return all(proc.poll() is None for proc in self.procs.values())

    @property
    def finished(self) -> int | None:
        """The exit code once every container exited and none is restarted (restartPolicy Never)."""
        if self.restart_policy == "Always" or self.running:
            return None
        return max(proc.returncode for proc in self.procs.values())

    def _probe(self, container: Manifest) -> bool:
        probe = container.get("readinessProbe")
        if not probe:
            return True
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or ()}
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = ports.get(get["port"], get["port"])
                return http_ok(self.ip, int(port), get.get("path", "/"))
            if "tcpSocket" in probe:
                port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
                with socket.create_connection((self.ip, int(port)), timeout=1):
                    return True
        except OSError:
            return False
        raise RuntimeError(f"pod {self.name}: readinessProbe {sorted(probe)} is not run by the box")

    def exec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`kubectl exec` of the first container: the command in its network, mount and UTS
        namespaces, with its environment."""
        container = self.spec["containers"][0]
        proc = self.procs[container["name"]]
        target = proc.pid  # ip netns exec, unshare and the script's bash all exec: this is the container
        env = dict(
            line.split("=", 1)
            for line in pathlib.Path(f"/proc/{target}/environ").read_bytes().decode().split("\0")
            if "=" in line
        )
        return subprocess.run(
            ["nsenter", "-t", str(target), "-n", "-m", "-u", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def stop(self) -> None:
        """Kill every process of the pod and remove its network namespace."""
        self.node.bridge.del_netns(self.netns)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def repository(image: str) -> str:
    """`docker.io/vllm/vllm-openai:v1@sha256:..` -> `vllm/vllm-openai` (no registry, tag or digest)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    name = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def http_ok(ip: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """A GET answered 2xx/3xx (kubelet's httpGet probe)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return 200 <= conn.getresponse().status < 400
    finally:
        conn.close()


def pod_manifest(template: Manifest, name: str, namespace: str, labels: Mapping[str, str] = {}) -> Manifest:
    """A pod object from a pod template, as a controller creates it."""
    meta = dict(template.get("metadata") or {})
    return {
        "metadata": {
            **meta,
            "name": name,
            "namespace": namespace,
            "labels": {**(meta.get("labels") or {}), **labels},
            "uid": secrets.token_hex(8),
        },
        "spec": dict(template["spec"]),
    }
