"""The Dockerfile's `operator` target, built with podman and run against the API emulator.

The image is built on a Debian bookworm base made by debootstrap (docker/debian-python.sh; no image
registry is reachable here) from wheels that the host's pip builds into docker/wheelhouse/ (pip in
a build container here cannot verify PyPI's TLS). The container runs with the Helm chart's
arguments and security settings, on the host's network so that it reaches the emulator on
127.0.0.1, and must reconcile the CPU example job: its ConfigMap and RayJob, and a status.

Both images are tagged by a content hash (the base by its script, the operator by the build
context and the base), so a rerun with nothing changed builds nothing. Runs alone with
`pytest -m image` (scripts/test_image.sh installs podman, runc and debootstrap first); skipped
where podman or debootstrap is not installed. podman reads tests/image/containers.conf unless
CONTAINERS_CONF names another file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "tests" / "helm"), str(REPO / "tests" / "e2e")]

from cluster import GROUP, PLURAL, VERSION, Cluster  # noqa: E402
from harness import EmulatorThread, wait_for  # noqa: E402
from helmchart import FULLNAME, Helm, find, get_tool  # noqa: E402

pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(1800),  # a first run: debootstrap (~2 min) and the build (~1 min)
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("debootstrap")),
                       reason="needs podman and debootstrap (scripts/test_image.sh installs them)"),
]

BASE_SCRIPT = REPO / "docker" / "debian-python.sh"
WHEELHOUSE = REPO / "docker" / "wheelhouse"
REQUIREMENTS = REPO / "docker" / "operator-requirements.txt"
EXAMPLE = REPO / "examples" / "nexrljob-arithmetic-cpu.yaml"
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(HERE / "containers.conf"))}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def context_files() -> list[Path]:
    """The build context as .dockerignore keeps it (its `!` roots less caches), minus the wheelhouse."""
    roots = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.startswith("!")]
    files = [REPO / "Dockerfile", REPO / ".dockerignore"]
    for root in map(REPO.joinpath, roots):
        candidates = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in candidates:
            parts = path.relative_to(REPO).parts
            if (path.is_file() and "__pycache__" not in parts and path.suffix != ".pyc"
                    and not any(p.endswith(".egg-info") for p in parts)
                    and not (parts[0] == "recipe" and "runs" in parts)
                    and parts[:2] != ("docker", "wheelhouse")):
                files.append(path)
    return files


def digest(paths: list[Path], *extra: str) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    for text in extra:
        sha.update(text.encode() + b"\0")
    return sha.hexdigest()[:16]


def timed(what: str, started: float) -> None:
    print(f"[image] {what}: {time.monotonic() - started:.1f} s", flush=True)


@pytest.fixture(scope="session")
def base_image() -> str:
    tag = f"localhost/debian-python:bookworm-{digest([BASE_SCRIPT])}"
    if not image_exists(tag):
        started = time.monotonic()
        done = subprocess.run(["bash", str(BASE_SCRIPT), tag], capture_output=True, text=True, env=ENV,
                              timeout=1200)
        assert done.returncode == 0, f"{BASE_SCRIPT.name} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        timed(f"base image {tag}", started)
    return tag


@pytest.fixture(scope="session")
def operator_image(base_image: str) -> str:
    base_id = podman("image", "inspect", "--format", "{{.Id}}", base_image).stdout.strip()
    tag = f"localhost/nexrl-operator:test-{digest(context_files(), base_id)}"
    if not image_exists(tag):
        started = time.monotonic()
        WHEELHOUSE.mkdir(exist_ok=True)
        # The host's pip (its index and wheel cache); sdists such as antlr4's become wheels here.
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(WHEELHOUSE),
               "-r", str(REQUIREMENTS), "setuptools>=77"]
        # What the wheelhouse already holds first (no index: seconds), else the host's indexes.
        done = subprocess.run([*pip, "--no-index", "--find-links", str(WHEELHOUSE)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            done = subprocess.run(pip, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"pip wheel failed:\n{done.stderr[-4000:]}"
        timed("host wheels", started)
        done = podman("build", "--pull=never", "--target", "operator",
                      "--build-arg", f"PYTHON_IMAGE={base_image}", "--build-arg", "PIP_NO_INDEX=1",
                      "--tag", tag, str(REPO), timeout=1200, check=False)
        assert done.returncode == 0, f"podman build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        timed(f"podman build {tag}", started)
        # Keep one test image: drop the tags of earlier contexts (their layers go with the last tag).
        listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}",
                        "--filter", "reference=localhost/nexrl-operator").stdout.split()
        for old in listed:
            if old.startswith("localhost/nexrl-operator:test-") and old != tag:
                podman("rmi", old, check=False)
    return tag


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chart_container(health_port: int, metrics_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator container and pod spec of the chart's Deployment (its defaults, the test's ports)."""
    values = {"health": {"port": health_port}, "metrics": {"enabled": True, "port": metrics_port}}
    manifests = Helm(get_tool("helm")).template(values)
    (deployment,) = find(manifests, "Deployment", FULLNAME)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod


def podman_run_args(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """What the kubelet would apply, as podman options: user, read-only root, capabilities, /tmp, env."""
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    user, group = sc.get("runAsUser", pod_sc.get("runAsUser")), sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    args = [f"--user={user}:{group}"] if user is not None else []
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    args += [f"--cap-drop={cap}" for cap in (sc.get("capabilities") or {}).get("drop", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        assert "emptyDir" in volumes[mount["name"]], mount  # the chart mounts only emptyDirs
        args.append(f"--tmpfs={mount['mountPath']}")
    args += [f"--env={e['name']}={e['value']}" for e in container.get("env", [])]
    if "command" in container:
        args.append("--entrypoint=" + json.dumps(container["command"]))
    return args


@pytest.fixture()
def server() -> Iterator[EmulatorThread]:
    with EmulatorThread() as thread:
        thread.install_crds()
        yield thread


@pytest.fixture()
def running_operator(operator_image: str, server: EmulatorThread,
                     tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    health_port, metrics_port = free_port(), free_port()
    container, pod = chart_container(health_port, metrics_port)
    assert server.url.startswith("http://127.0.0.1:"), server.url  # reached over --network=host
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    kubeconfig.chmod(0o644)  # the container's user (10001) reads it
    name = f"nexrl-image-test-{os.getpid()}"
    podman("rm", "--force", name, check=False)
    started = time.monotonic()
    podman("run", "--detach", "--pull=never", f"--name={name}", "--network=host",
           f"--volume={kubeconfig}:/etc/nexrl/kubeconfig:ro", "--env=KUBECONFIG=/etc/nexrl/kubeconfig",
           *podman_run_args(container, pod), operator_image, *container["args"])
    try:
        def watching() -> bool:
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", f"the operator container is {state}:\n{logs(name)}"
            return server.watches("nexrljobs") > 0
        wait_for(watching, 60, interval=0.2, what="the operator in its container to watch nexrljobs")
        timed("container start to watching nexrljobs", started)
        yield name, health_port, metrics_port
        log = logs(name)
        assert "Traceback" not in log, log[-5000:]
    finally:
        podman("rm", "--force", "--time=10", name, check=False, timeout=60)


def logs(name: str) -> str:
    done = podman("logs", name, check=False)
    return done.stdout + done.stderr


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_the_operator_image_reconciles_a_job_with_the_charts_arguments(
        running_operator: tuple[str, int, int], server: EmulatorThread, operator_image: str) -> None:
    name, health_port, metrics_port = running_operator
    cluster = Cluster(server)
    body = yaml.safe_load(EXAMPLE.read_text())
    ns, job_name = body["metadata"].get("namespace", "default"), body["metadata"]["name"]
    started = time.monotonic()
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def reconciled() -> dict[str, Any] | None:
        job = cluster.job(ns, job_name)
        children = cluster.owned(ns, job_name)
        done = job.get("status", {}).get("phase") and {"ConfigMap", "RayJob"} <= children.keys()
        return job if done else None

    try:
        job = wait_for(reconciled, 60, interval=0.2, what=f"{job_name}'s children and status")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{logs(name)[-5000:]}") from None
    timed("job created to children and status", started)
    status = job["status"]
    assert status["phase"] == "Provisioning", status
    assert status["children"]["config"] == f"{job_name}-config" and status["children"]["rayjob"] == job_name
    assert status["observedGeneration"] == 1
    (rayjob,) = cluster.owned(ns, job_name)["RayJob"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"] == body["spec"]["image"]
    assert head["serviceAccountName"] == "nexrl-runtime"  # the chart's --runtime-service-account
    # The kubelet's liveness probe and Prometheus' scrape, on the chart's ports.
    assert http_get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
    code, metrics = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert code == 200 and "nexrl_" in metrics, metrics[:2000]
    # The image holds the operator only: none of the runtime's ML stack.
    done = podman("run", "--rm", "--pull=never", "--entrypoint=python", operator_image, "-c",
                  "import importlib.util as u;"
                  "print([m for m in ('torch', 'transformers', 'ray', 'vllm') if u.find_spec(m)])")
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
