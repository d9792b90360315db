"""Faults in the box (issue 12 item 5, issue 13's cluster resume): the operator restarted mid-job
creates no child twice; a RayJob whose driver is SIGKILLed is re-created by the operator
(`maxRestarts: 1`) and the run resumes from the latest complete checkpoint on the job's PVC, so
`metrics.jsonl` there holds every step exactly once; a vLLM replica killed mid-run is restarted by
the kubelet while rollouts go on at the other, and is caught up to the current weights before it
serves again.

Root only; `pytest -m cluster`. The job is the arithmetic twin with storage, checkpoints every step,
`resume.mode: auto` and more steps (so there is time to restart things while it runs).
"""

from __future__ import annotations

import collections
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
from twins import apply_twin, prepare_claim, watch_twin

pytestmark = pytest.mark.cluster
NAMESPACE, NAME, TOTAL = "team-b", "arithmetic-resume", 60


def resume_job() -> dict[str, Any]:
    """The arithmetic twin with a PVC, a checkpoint every step, auto resume and one restart allowed."""
    job = yaml.safe_load((REPO / "examples" / "cpu" / "nexrljob-arithmetic-cpu.yaml").read_text())
    job["metadata"]["name"] = NAME
    config = job["spec"]["config"]
    config.update(
        run_name=NAME, total_steps=TOTAL, checkpoint={"every": 1, "keep_last": 3}, resume={"mode": "auto"}
    )
    job["spec"].update(storage={"size": "1Gi"}, maxRestarts=1)
    return job


def job_status(box: Box, namespace: str = NAMESPACE, name: str = NAME) -> dict[str, Any]:
    jobs = box.server.live("nexrl.io", "v1alpha1", "nexrljobs")
    job = next(j for j in jobs if (j["metadata"]["namespace"], j["metadata"]["name"]) == (namespace, name))
    return dict(job.get("status") or {})


def complete_steps(run_dir: pathlib.Path) -> list[int]:
    """Steps of the complete checkpoints (marker written last) in the run folder on the PVC."""
    root = run_dir / "checkpoints"
    return sorted(int(p.parent.name.rsplit("_", 1)[1]) for p in root.glob("global_step_*/COMPLETE"))


def kill_driver(netns: str) -> list[int]:
    """SIGKILL the `nexrl run` processes (the Ray job's driver) in the head pod's network namespace."""
    killed = []
    for pid in netns_pids(netns):
        try:
            argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(pathlib.Path(a).name == "nexrl" for a in argv[:2]) and "run" in argv:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def operator_creates(box: Box, token: str) -> collections.Counter[tuple[str, str]]:
    """(resource, name) of every object the operator created in the job's namespace."""
    return collections.Counter(
        (c.resource or "", c.name or "")
        for c in list(box.server.emu.calls)
        if c.verb == "create" and c.token == token and c.namespace == NAMESPACE and c.status == 201
    )


def test_operator_restart_and_rayjob_failure_resume_from_the_pvc(box: Box, tmp_path: pathlib.Path) -> None:
    manifest = tmp_path / f"{NAME}.yaml"
    manifest.write_text(yaml.safe_dump(resume_job()))
    operator_token = box.node.token("nexrl-system", "nexrl-nexrl-operator")
    started = apply_twin(box, manifest)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        watched = pool.submit(watch_twin, box, NAMESPACE, NAME, started, 600)
        wait_for(
            lambda: (NAMESPACE, NAME) in box.kuberay.runs or watched.done(),
            300,
            interval=0.1,
            what="the operator to create the RayJob",
        )
        assert not watched.done(), watched.result()

        # 1. the operator's process dies while the job provisions; kubelet restarts it; it converges
        # without re-creating anything
        (pod,) = box.operator_pods()
        before, watches = operator_creates(box, operator_token), box.server.watches("nexrljobs")
        for proc in pod.procs.values():
            proc.kill()
        wait_for(
            lambda: pod.restarts >= 1 and box.server.watches("nexrljobs") > watches,
            120,
            interval=0.3,
            what="the restarted operator to watch nexrljobs again",
        )

        # 2. a complete checkpoint past step 1 on the PVC, then the driver is SIGKILLed: the Ray job fails
        run_dir = box.workdir / "pvc" / NAMESPACE / f"{NAME}-data" / NAME
        wait_for(
            lambda: any(s >= 2 for s in complete_steps(run_dir)) or watched.done(),
            300,
            interval=0.05,
            what="a complete checkpoint at step >= 2",
        )
        assert not watched.done(), watched.result()
        first = box.kuberay.runs[(NAMESPACE, NAME)]
        assert first.head is not None
        killed = kill_driver(first.head.netns)
        assert killed, "no `nexrl run` process found in the head pod"
        saved_before_kill = max(complete_steps(run_dir))
        restarting = wait_for(
            lambda: (s := job_status(box)).get("restarts") == 1 and s,
            120,
            interval=0.2,
            what="the operator to restart the failed run",
        )
        run = watched.result()

    print(f"\n{NAME}: {run.rows}")
    phases = [p for p in run.phases() if p != "Pending"]
    assert phases == ["Provisioning", "Running", "Provisioning", "Running", "Succeeded"], run.rows
    assert "restart 1 of 1" in restarting["message"] and "resume.mode: auto" in restarting["message"]
    final = job_status(box)
    assert final["restarts"] == 1 and final["step"] == TOTAL, final

    # the second run resumed from the newest complete checkpoint (or a newer one it saw) and went on
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["phase"] == "rl"] == list(range(1, TOTAL + 1)), rows
    logs = sorted(
        box.workdir.glob(f"pods/{NAMESPACE}.{NAME}-*/ray-job-submitter.log"), key=lambda p: p.stat().st_mtime
    )
    assert len(logs) == 2, logs
    resumed = [line for line in logs[-1].read_text(errors="replace").splitlines() if "resumed from" in line]
    assert len(resumed) == 1 and f"/data/{NAME}/checkpoints/global_step_" in resumed[0], resumed
    step = int(resumed[0].split("global_step_", 1)[1].split(":", 1)[0])
    assert TOTAL > step >= saved_before_kill >= 2, (step, saved_before_kill)
    assert "resumed from" not in logs[0].read_text(errors="replace")

    # every child once, the RayJob twice (the failed one deleted, then a new one); KubeRay ran both
    creates = operator_creates(box, operator_token)
    assert creates[("rayjobs", NAME)] == 2, creates
    assert all(n == 1 for key, n in creates.items() if key != ("rayjobs", NAME)), creates
    assert creates[("persistentvolumeclaims", f"{NAME}-data")] == 1, creates
    assert sum(before.values()) >= 2, before  # the children were made before the operator restarted
    states = [(d, j) for name, d, j in box.kuberay.history if name == NAME]
    assert ("Failed", "FAILED") in states and states[-1] == ("Complete", "SUCCEEDED"), states
    assert not box.errors, box.errors


KILLED = "smollm2-gsm8k-replica-kill"
COMPLETION = '"POST /v1/completions HTTP/1.1" 200'
RELOAD = '"POST /update_weight_version HTTP/1.1" 200'


def replica_kill_job() -> dict[str, Any]:
    """The GSM8K twin with steps enough to outlast a vLLM restart (the test deletes it once seen)."""
    job = yaml.safe_load((REPO / "examples" / "cpu" / "nexrljob-gsm8k-cpu.yaml").read_text())
    job["metadata"]["name"] = KILLED
    overrides = [o for o in job["spec"]["overrides"] if not o.startswith("total_steps=")]
    job["spec"]["overrides"] = [*overrides, "total_steps=500", "logging.status_every_s=0"]
    return job


def weight_version(pod: Any, ip: str, port: int) -> str:
    """The weight version a replica reports (vLLM dev mode's /weight_info), asked from inside a pod."""
    probe = f"import json, urllib.request; print(json.load(urllib.request.urlopen('http://{ip}:{port}/weight_info'))"
    probe += "['weight_version'])"
    done = pod.exec("python", "-c", probe)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_killed_vllm_replica_restarts_and_is_caught_up_before_it_serves(
    box: Box, tmp_path: pathlib.Path
) -> None:
    prepare_claim(box, "team-a", "nexrl-shared")
    manifest = tmp_path / f"{KILLED}.yaml"
    manifest.write_text(yaml.safe_dump(replica_kill_job()))
    box.kubectl("apply", "-f", str(manifest))

    def step() -> int:
        return int(job_status(box, "team-a", KILLED).get("step") or 0)

    wait_for(lambda: step() >= 1 or box.errors, 900, interval=0.5, what="the first step")
    assert not box.errors, box.errors
    victim, other = box.workloads.pods[("Deployment", "team-a", f"{KILLED}-inference")]
    port = victim.spec["containers"][0]["ports"][0]["containerPort"]
    log = victim.log_path("vllm")
    offset, step_at_kill = log.stat().st_size, step()
    for pid in netns_pids(victim.netns):  # the container dies at once (as an OOM kill does)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not victim.ready, 30, interval=0.1, what="the killed replica to be seen not ready")

    # rollouts go on at the other replica while this one restarts
    wait_for(
        lambda: step() >= step_at_kill + 2 or victim.ready,
        600,
        interval=0.3,
        what="steps while the replica is down",
    )
    assert not victim.ready and victim.restarts == 1, "the replica came back before 2 more steps"
    wait_for(lambda: victim.ready or box.errors, 600, interval=0.5, what="the restarted replica to be ready")

    def since_restart() -> str:
        with log.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")

    # caught up before it serves: its first completion after the restart comes after a reload
    wait_for(lambda: COMPLETION in since_restart(), 600, interval=0.5, what="the restarted replica to serve")
    text = since_restart()
    assert RELOAD in text[: text.index(COMPLETION)], text[-3000:]
    versions = wait_for(
        lambda: (v := {weight_version(other, p.ip, port) for p in (victim, other)}) and len(v) == 1 and v,
        120,
        interval=0.5,
        what="both replicas to report one weight version",
    )
    assert int(versions.pop()) >= step_at_kill

    # deleting the job mid-run takes every child with it (ownerReferences)
    box.kubectl("delete", "-f", str(manifest))
    wait_for(
        lambda: (
            ("Deployment", "team-a", f"{KILLED}-inference") not in box.workloads.pods
            and ("team-a", KILLED) not in box.kuberay.runs
        ),
        120,
        what="the job's pods to go",
    )
    assert not box.errors, box.errors
