"""The cluster in a box (docs/box.md): the chart's operator as a pod, the kubelet and KubeRay
stand-ins running what it creates in network namespaces, the real kubectl as the user; the
arithmetic twin. The GSM8K-shaped twins are in test_vllm_twins.py.

Root only (network namespaces, bind mounts); `pytest -m cluster`. One box for the module.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml
from box import REPO, Box
from harness import wait_for
from twins import run_twin

pytestmark = pytest.mark.cluster
FIGURES: dict[str, dict[str, float | None]] = {}


def test_operator_runs_as_the_chart_starts_it(box: Box) -> None:
    """The chart's Deployment, run by the box's kubelet: its command line, logged in in-cluster with
    its service account over TLS (every call it makes carries that account's token)."""
    (pod,) = box.operator_pods()
    script = pod.dir.joinpath("operator.sh").read_text()
    assert "nexrl-operator run --liveness=http://0.0.0.0:8080/healthz" in script
    assert "--runtime-service-account=nexrl-runtime" in script
    token = box.node.token("nexrl-system", "nexrl-nexrl-operator")
    calls = [c for c in box.server.emu.calls if c.resource == "nexrljobs" and c.verb == "watch"]
    assert calls and all(c.token == token for c in calls)
    status = box.kubectl("get", "deploy", "-n", "nexrl-system", "nexrl-nexrl-operator", "-o", "json").stdout
    assert json.loads(status)["status"]["readyReplicas"] == 1


def test_headless_service_resolves_to_every_ready_pod(box: Box, tmp_path: pathlib.Path) -> None:
    """Two ready replicas behind a headless Service: from a pod, the name gives both IPs and each
    answers; the Deployment's status says 2 ready (written back as the controller manager does)."""
    manifests = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo", "namespace": "team-b"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "echo"}},
                "template": {
                    "metadata": {"labels": {"app": "echo"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "echo",
                                "image": "nexrl/nexrl:0.1.0",
                                "command": ["python", "-m", "http.server", "$(PORT)", "--bind", "$(MY_IP)"],
                                "env": [
                                    {"name": "PORT", "value": "8000"},
                                    {
                                        "name": "MY_IP",
                                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                    },
                                ],
                                "ports": [{"name": "http", "containerPort": 8000}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": "team-b"},
            "spec": {"clusterIP": "None", "selector": {"app": "echo"}, "ports": [{"port": 8000}]},
        },
    ]
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    box.kubectl("apply", "-f", str(path))

    def ready() -> bool:
        out = box.kubectl("get", "deploy", "-n", "team-b", "echo", "-o", "json").stdout
        return json.loads(out).get("status", {}).get("readyReplicas") == 2

    wait_for(ready, 60, interval=0.3, what="2 ready echo replicas")
    pods = box.workloads.pods[("Deployment", "team-b", "echo")]
    assert len({p.ip for p in pods}) == 2
    probe = (
        "import json, socket, urllib.request\n"
        "name = 'echo.team-b.svc.cluster.local'\n"
        "ips = sorted({a[4][0] for a in socket.getaddrinfo(name, 8000, type=socket.SOCK_STREAM)})\n"
        "codes = [urllib.request.urlopen(f'http://{ip}:8000/').status for ip in ips]\n"
        "try:\n    socket.getaddrinfo('nowhere.example', 80); dns = 'resolved'\n"
        "except OSError:\n    dns = 'fails'\n"
        "print(json.dumps({'ips': ips, 'codes': codes, 'dns': dns, 'host': socket.gethostname()}))"
    )
    done = pods[0].exec("python", "-c", probe)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "ips": sorted(p.ip for p in pods),
        "codes": [200, 200],
        "dns": "fails",
        "host": pods[0].name,
    }
    box.kubectl("delete", "-f", str(path))
    wait_for(lambda: ("Deployment", "team-b", "echo") not in box.workloads.pods, 30, what="echo pods gone")


def test_arithmetic_cpu_twin_runs_to_succeeded(box: Box) -> None:
    """examples/cpu/nexrljob-arithmetic-cpu.yaml: applied with kubectl, STEP moving and REWARD shown
    in `kubectl get nexrljobs`, Provisioning -> Running -> Succeeded; the RayJob went through
    KubeRay's states; the runtime's progress reached the API with its service-account token."""
    manifest = REPO / "examples" / "cpu" / "nexrljob-arithmetic-cpu.yaml"
    total = yaml.safe_load(manifest.read_text())["spec"]["config"]["total_steps"]
    run = run_twin(box, manifest, "team-b", "arithmetic-cpu")
    FIGURES["arithmetic-cpu"] = {"first_step_s": run.first_step_s, "succeeded_s": run.done_s}
    print(f"\narithmetic-cpu twin: {run.rows}\nfigures: {FIGURES['arithmetic-cpu']}")
    assert [p for p in run.phases() if p != "Pending"] == ["Provisioning", "Running", "Succeeded"], run.rows
    steps = [r.step for r in run.rows if r.step is not None]
    assert steps == sorted(steps) and len(set(steps)) >= 2 and steps[-1] == total, run.rows
    assert all(r.reward is not None for r in run.rows if r.step), run.rows
    deployment = [(d, j) for name, d, j in box.kuberay.history if name == "arithmetic-cpu"]
    assert deployment[0] == ("Initializing", "") and ("Running", "PENDING") in deployment
    assert deployment[-1] == ("Complete", "SUCCEEDED")
    token = box.node.token("team-b", "nexrl-runtime")
    reports = [
        c
        for c in box.server.emu.calls
        if (c.resource, c.subresource, c.verb) == ("nexrljobs", "status", "patch")
        and c.namespace == "team-b"
        and c.token == token
    ]
    assert reports and all(c.status == 200 for c in reports)
    # Ray nodes as KubeRay starts them: CPUs and memory from each worker's requests, joining the head Service
    workers = sorted(box.workdir.glob("pods/team-b.arithmetic-cpu-*-rollout-worker-*/ray-worker.sh"))
    assert len(workers) == 2
    for script in workers:
        text = script.read_text()
        assert "--num-cpus=1 --memory=2147483648" in text and "--block" in text
        assert "-head-svc.team-b.svc.cluster.local:6379" in text
    # shutdownAfterJobFinishes: the RayCluster and its pods go
    wait_for(lambda: not box.kuberay.all_pods(), 60, what="the RayCluster's pods to go")

    def clusters() -> list[str]:
        return [
            c["metadata"]["name"]
            for c in box.server.live("ray.io", "v1", "rayclusters")
            if c["metadata"]["namespace"] == "team-b"
        ]

    wait_for(lambda: not clusters(), 30, what="the RayCluster to be deleted")
    assert not box.errors, box.errors
