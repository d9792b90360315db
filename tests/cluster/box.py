"""A cluster in a box: the e2e API emulator over TLS on a Linux bridge, the Helm chart applied with
the real kubectl (so the operator runs as a pod, as the chart starts it, logging in with its
service account), and the kubelet + KubeRay stand-ins running every pod in its own network
namespace. See docs/box.md for what it emulates and what it does not.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import httpx
import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "tests" / "e2e"), str(REPO / "tests" / "helm")]

import podspec  # noqa: E402
from apiserver_model import BUILTINS, KUBERAY, ResourceDef  # noqa: E402
from harness import EmulatorThread, Kubectl, wait_for  # noqa: E402
from helmchart import CHART, NAMESPACE, RELEASE, Helm, get_tool  # noqa: E402
from kubelet import Image, Node  # noqa: E402
from kuberay import KubeRay  # noqa: E402
from pki import make_pki  # noqa: E402
from sandbox import Bridge  # noqa: E402
from workloads import Workloads  # noqa: E402

log = logging.getLogger("box")
RBAC = tuple(
    ResourceDef("rbac.authorization.k8s.io", "v1", plural, kind, namespaced=namespaced)
    for plural, kind, namespaced in (
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    )
)
IMAGES = {  # the Dockerfile's targets and the official vLLM image: ENTRYPOINT, CMD, ENV
    "nexrl/nexrl-operator": Image(("nexrl-operator",), ("run",), {"PYTHONDONTWRITEBYTECODE": "1"}),
    "nexrl/nexrl": Image((), ("nexrl", "--help"), {}),
    "vllm/vllm-openai": Image(("vllm", "serve"), (), {}),
}
ADMIN_TOKEN = "emulator-admin"
SHIMS = "/opt/nexrl-box/bin"
"""where the pods find the box's launchers (first on PATH)"""


class Api:
    """What the stand-ins write, over HTTPS to the emulator (as kubelet and controllers do)."""

    def __init__(self, server: EmulatorThread) -> None:
        self.server = server
        self.client = httpx.Client(
            base_url=server.url,
            verify=ssl.create_default_context(cafile=str(server.tls.ca)),
            timeout=10,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "User-Agent": "box"},
        )

    @staticmethod
    def _path(group: str, version: str, plural: str, namespace: str | None, name: str = "") -> str:
        base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    def close(self) -> None:
        self.client.close()

    def create(self, group: str, version: str, plural: str, namespace: str, body: dict[str, Any]) -> None:
        response = self.client.post(self._path(group, version, plural, namespace), json=body)
        if response.status_code not in (201, 409):
            raise RuntimeError(
                f"create {plural} {body['metadata']['name']}: {response.status_code} {response.text}"
            )

    def delete(self, group: str, version: str, plural: str, namespace: str, name: str) -> None:
        self.client.delete(self._path(group, version, plural, namespace, name))

    def uid(self, group: str, version: str, plural: str, namespace: str, name: str) -> str:
        response = self.client.get(self._path(group, version, plural, namespace, name))
        response.raise_for_status()
        return str(response.json()["metadata"]["uid"])

    def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> None:
        response = self.client.patch(
            self._path(group, version, plural, namespace, name) + "/status",
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code != 200 and response.status_code != 404:
            raise RuntimeError(f"patch {plural}/{name}/status: {response.status_code} {response.text}")


class Box:
    """The whole box; use as a context manager (everything it made is undone on exit)."""

    def __init__(
        self,
        workdir: pathlib.Path,
        prefix: str = "10.177.7",
        bridge: str = "nxbox0",
        chart_values: dict[str, Any] | None = None,
        tick: float = 0.3,
    ) -> None:
        self.workdir, self.tick_s = workdir, tick
        self.bridge = Bridge(bridge, prefix)
        self.chart_values = chart_values or {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="box", daemon=True)
        self.server: EmulatorThread
        self.node: Node
        self.kubectl: Kubectl

    def __enter__(self) -> Box:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        self.bridge.__enter__()
        host = self.bridge.host_ip
        tls = make_pki(
            self.workdir / "pki",
            [host, "127.0.0.1"],
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{podspec.DOMAIN}",
            ],
        )
        self.server = EmulatorThread(host=host, tls=tls, stop_timeout=75, kinds=BUILTINS + KUBERAY + RBAC)
        self.server.__enter__()
        self.server.install_crds()
        self.api = Api(self.server)
        node_dir = self.workdir / "node"
        node_dir.mkdir(parents=True)
        (node_dir / "hosts").write_text(podspec.hosts_file([], []))
        (node_dir / "resolv.conf").write_text(  # no DNS server: a name not in /etc/hosts fails at once
            f"search default.svc.{podspec.DOMAIN} svc.{podspec.DOMAIN} {podspec.DOMAIN}\n"
            "nameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"
        )
        (node_dir / "host.conf").write_text("multi on\n")  # every address of a name in /etc/hosts
        app = self.workdir / "app"  # the image's /app: the recipes
        app.mkdir()
        (app / "recipe").symlink_to(REPO / "recipe")
        bin_dir = pathlib.Path(sys.prefix) / "bin"
        shims = self.workdir / "bin"  # `vllm` for the CPU build (DESIGN.md: its own CLI fails as installed)
        shims.mkdir()
        (shims / "vllm").write_text('#!/bin/sh\nexec python -m nexrl_runtime.inference.vllm_server "$@"\n')
        (shims / "vllm").chmod(0o755)
        base_env = {
            "PATH": f"{SHIMS}:{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/home/nexrl",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            # the image has this repo's wheel installed; here the venv's packages + this checkout
            "PYTHONPATH": f"{REPO}:{REPO / 'operator'}",
        }
        self.node = Node(
            root=self.workdir,
            bridge=self.bridge,
            api_port=int(self.server.url.rsplit(":", 1)[1]),
            ca=tls.ca,
            app=app,
            base_env=base_env,
            images=IMAGES,
            config_map=self._config_map,
            mounts=((shims, SHIMS),),
            service_account=self._service_account,
        )
        self.workloads = Workloads(
            self.node,
            lambda kind, ns, name, body: self.api.patch_status(
                "apps", "v1", kind.lower() + "s", ns, name, body
            ),
        )
        self.kuberay = KubeRay(self.node, self.api)
        self._hosts = ""
        self._thread.start()
        self.kubectl = self.server.kubectl(self.workdir)
        self.kubectl("apply", "-f", str(REPO / "examples" / "namespaces.yaml"))
        chart = self.workdir / "chart.yaml"  # `helm install --create-namespace`: the release's namespace too
        docs = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            *Helm(get_tool("helm")).template(self.chart_values, chart=CHART),
        ]
        chart.write_text(yaml.safe_dump_all(docs))
        self.kubectl("apply", "-f", str(chart))
        wait_for(
            lambda: self.server.watches("nexrljobs") > 0 or self._operator_failed(),
            120,
            interval=0.5,
            what="the operator pod to watch nexrljobs",
        )
        if self._operator_failed():
            raise AssertionError(f"the operator pod exited:\n{self.operator_log()[-5000:]}")

    def operator_pods(self) -> list[Any]:
        return [
            p
            for (kind, ns, name), pods in self.workloads.pods.items()
            if ns == NAMESPACE and name == f"{RELEASE}-nexrl-operator"
            for p in pods
        ]

    def _operator_failed(self) -> bool:
        return any(p.restarts for p in self.operator_pods()) or bool(self.errors)

    def operator_log(self) -> str:
        return "\n".join(
            p.log_path(c["name"]).read_text(errors="replace")
            for p in self.operator_pods()
            for c in p.spec["containers"]
            if p.log_path(c["name"]).exists()
        )

    def _config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next(
            (
                cm
                for cm in self.server.live("", "v1", "configmaps")
                if (cm["metadata"]["namespace"], cm["metadata"]["name"]) == (namespace, name)
            ),
            None,
        )

    def _service_account(self, namespace: str, name: str) -> bool:
        return name == "default" or any(
            (sa["metadata"]["namespace"], sa["metadata"]["name"]) == (namespace, name)
            for sa in self.server.live("", "v1", "serviceaccounts")
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.workloads.tick(
                    self.server.live("apps", "v1", "deployments"),
                    self.server.live("apps", "v1", "statefulsets"),
                )
                self.kuberay.tick(self.server.live("ray.io", "v1", "rayjobs"))
                self._write_hosts()
            except Exception:  # keep the box going; the test sees it in box.errors
                error = traceback.format_exc()
                if not self.errors or self.errors[-1] != error:
                    log.error("box loop: %s", error)
                    self.errors.append(error)
            self._stop.wait(max(0.0, self.tick_s - (time.monotonic() - started)))

    def pods(self) -> list[Any]:
        return [*self.workloads.all_pods(), *self.kuberay.all_pods()]

    def _write_hosts(self) -> None:
        api = {name: self.bridge.host_ip for name in podspec.service_names("kubernetes", "default")[:3]}
        text = podspec.hosts_file(
            self.server.live("", "v1", "services"), [p.info() for p in self.pods()], api
        )
        if text != self._hosts:  # in place: every pod bind-mounts this very file
            with (self.workdir / "node" / "hosts").open("r+") as file:
                file.truncate(0)
                file.write(text)
            self._hosts = text

    def __exit__(self, *exc: object) -> None:
        """Stop the loop, every pod (ray nodes, the operator), the emulator, the bridge; each step runs
        even when an earlier one failed, and the first failure is raised at the end."""
        self._stop.set()
        steps = [lambda: self._thread.join(timeout=60) if self._thread.is_alive() else None]
        steps += [
            getattr(self, part).close for part in ("kuberay", "workloads", "api") if hasattr(self, part)
        ]
        if hasattr(self, "server") and getattr(self.server, "url", ""):
            steps.append(self.server.__exit__)
        steps.append(self.bridge.__exit__)
        if hasattr(self, "node"):
            steps.append(lambda: remove_made(self.node.made))
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as err:
                failure = failure or err
        if failure is not None:
            raise failure


def remove_made(paths: Sequence[pathlib.Path]) -> None:
    """Remove the mount points the box created on the host (deepest first, only if still empty)."""
    for path in sorted(set(paths), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else (
                path.unlink() if path.is_file() and path.stat().st_size == 0 else None
            )
