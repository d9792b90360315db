"""Faults in the box (issue 12 item 5, issue 13's cluster resume): the operator restarted mid-job
creates no child twice; a RayJob whose driver is SIGKILLed is re-created by the operator
(`maxRestarts: 1`) and the run resumes from the latest complete checkpoint on the job's PVC, so
`metrics.jsonl` there holds every step exactly once. (A vLLM replica killed mid-run is the GSM8K
twin's test in test_box.py, so that the twin's vLLM servers start once for both.)

Root only; `pytest -m cluster`. The job is the arithmetic twin with storage, checkpoints every step,
`resume.mode: auto` and more steps (so there is time to restart things while it runs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import pathlib
import signal
import subprocess
from typing import Any

import pytest
import yaml
from box import REPO, Box
from harness import wait_for
from sandbox import netns_pids
from twins import apply_twin, watch_twin

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


def test_deleting_a_running_job_takes_every_pod_with_it(box: Box, tmp_path: pathlib.Path) -> None:
    """`kubectl delete` of a job mid-run: garbage collection (ownerReferences) takes its children, and
    the stand-ins stop every pod of them."""
    name = "arithmetic-deleted"
    job = yaml.safe_load((REPO / "examples" / "cpu" / "nexrljob-arithmetic-cpu.yaml").read_text())
    job["metadata"]["name"] = name
    job["spec"]["config"].update(run_name=name, total_steps=100_000)
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(job))
    box.kubectl("apply", "-f", str(manifest))
    wait_for(lambda: int(job_status(box, NAMESPACE, name).get("step") or 0) >= 1, 300, what="the first step")
    run = box.kuberay.runs[(NAMESPACE, name)]
    pods = run.pods()
    assert pods and all(p.running for p in pods)
    box.kubectl("delete", "-f", str(manifest))

    def children() -> list[str]:
        return [
            f"{plural}/{o['metadata']['name']}"
            for group, plural in (("ray.io", "rayjobs"), ("ray.io", "rayclusters"), ("", "configmaps"))
            for o in box.server.live(group, "v1", plural)
            if o["metadata"]["namespace"] == NAMESPACE and o["metadata"]["name"].startswith(name)
        ]

    def gone() -> bool:
        return (NAMESPACE, name) not in box.kuberay.runs

    wait_for(lambda: not children() and gone(), 120, what="the children to go")
    assert not any(p.running for p in pods), [p.name for p in pods if p.running]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not {p.netns for p in pods} & set(listed)
    assert not box.errors, box.errors
