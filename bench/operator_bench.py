"""Operator benchmark: apply N NexRLJobs to the API emulator and time the real operator process.

    .venv/bin/python bench/operator_bench.py            # N = 50 and 200
    .venv/bin/python bench/operator_bench.py --jobs 20 --status-interval 1

For each N (a fresh emulator and operator each time) it reports: time until every job has all
its children and a status (phase Provisioning); time until every job is Running after the test
marks every RayJob running and every Deployment ready (the status timer's path); API requests
per job (counted once the operator has gone quiet, Events included), split by client (kopf / the
operator's own client) and by verb; requests per job per minute while idle; and the operator's
RSS (before the jobs, after, peak).
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import kubernetes  # noqa: E402
from apiserver_model import Call  # noqa: E402
from harness import EmulatorThread, OperatorProcess, wait_for  # noqa: E402

SPEC: dict[str, Any] = {
    "recipe": "/app/recipe/gsm8k/gsm8k.yaml", "image": "nexrl:bench", "model": {"name": "m"},
    "inference": {"replicas": 2}, "trainer": {"nodes": 1, "gpusPerNode": 2},
}
CHILDREN_PER_JOB = 4  # ConfigMap, Service, Deployment, RayJob for SPEC
NS = "bench"


def _job(i: int) -> dict[str, Any]:
    return {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob", "metadata": {"name": f"job-{i:04d}"},
            "spec": SPEC}


def _phases(server: EmulatorThread) -> collections.Counter[str]:
    return collections.Counter((job.get("status") or {}).get("phase", "-")
                               for job in server.live("nexrl.io", "v1alpha1", "nexrljobs"))


def _children(server: EmulatorThread) -> int:
    kinds = (("", "v1", "configmaps"), ("", "v1", "services"), ("apps", "v1", "deployments"),
             ("ray.io", "v1", "rayjobs"))
    return sum(len(server.live(*kind)) for kind in kinds)


def _operator_calls(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.agent.startswith(("kopf", "nexrl-operator"))]


def _quiesce(server: EmulatorThread, quiet: float = 1.0, timeout: float = 60) -> None:
    """Wait until the operator has sent nothing for ``quiet`` seconds (Events are posted asynchronously)."""
    seen = {"count": -1, "since": time.monotonic()}

    def settled() -> bool:
        count = len(_operator_calls(server.emu.calls))
        if count != seen["count"]:
            seen.update(count=count, since=time.monotonic())
        return time.monotonic() - seen["since"] >= quiet

    wait_for(settled, timeout, interval=0.1, what="the operator to go quiet")


def _mark_running(api: kubernetes.client.ApiClient, n: int) -> None:
    """Play KubeRay and the Deployment controller for every job (from a few threads)."""
    custom, apps = kubernetes.client.CustomObjectsApi(api), kubernetes.client.AppsV1Api(api)

    def run(i: int) -> None:
        name = f"job-{i:04d}"
        running = {"status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}}
        custom.patch_namespaced_custom_object_status("ray.io", "v1", NS, "rayjobs", name, running)
        apps.patch_namespaced_deployment_status(
            f"{name}-inference", NS, {"status": {"replicas": 2, "readyReplicas": 2}})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, range(n)))


def bench(n: int, status_interval: float, idle_seconds: float) -> dict[str, Any]:
    with EmulatorThread() as server, tempfile.TemporaryDirectory() as tmp:
        server.install_crd()
        operator = OperatorProcess(server, pathlib.Path(tmp), "--status-interval", str(status_interval))
        operator.start(timeout=60)
        try:
            api = server.api_client()
            custom = kubernetes.client.CustomObjectsApi(api)
            rss_idle = operator.rss_mb()
            start = len(server.emu.calls)
            t0 = time.monotonic()
            for i in range(n):
                custom.create_namespaced_custom_object("nexrl.io", "v1alpha1", NS, "nexrljobs", _job(i))
            t_applied = time.monotonic() - t0
            def provisioned() -> bool:
                return _phases(server)["Provisioning"] == n and _children(server) == n * CHILDREN_PER_JOB

            wait_for(provisioned, timeout=60 + n, interval=0.1, what=f"{n} jobs to be provisioned")
            t_provisioned = time.monotonic() - t0
            _quiesce(server)
            provision_calls = _operator_calls(server.emu.calls[start:])
            running_start = len(server.emu.calls)
            t1 = time.monotonic()
            _mark_running(api, n)
            wait_for(lambda: _phases(server)["Running"] == n, timeout=60 + n, interval=0.1,
                     what=f"{n} jobs to be Running")
            t_running = time.monotonic() - t1
            _quiesce(server)
            running_calls = _operator_calls(server.emu.calls[running_start:])
            idle_start = len(server.emu.calls)
            time.sleep(idle_seconds)  # measuring idle traffic: nothing to wait for by design
            idle_calls = _operator_calls(server.emu.calls[idle_start:])
            return {
                "jobs": n, "apply_s": t_applied, "provisioned_s": t_provisioned, "running_s": t_running,
                "calls": provision_calls, "running_calls": running_calls,
                "idle_per_job_min": len(idle_calls) / n / (idle_seconds / 60),
                "rss_idle_mb": rss_idle, "rss_mb": operator.rss_mb(),
                "rss_peak_mb": operator.rss_mb(peak=True),
            }
        finally:
            operator.stop()


def report(result: dict[str, Any]) -> None:
    n, calls = result["jobs"], result["calls"]
    by_agent = collections.Counter("kopf" if c.agent.startswith("kopf") else "operator" for c in calls)
    by_verb = collections.Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}"
                                  for c in calls)
    print(f"\n== {n} NexRLJobs ==")
    print(f"applied by the client in          {result['apply_s']:7.2f} s")
    print(f"all children + status after       {result['provisioned_s']:7.2f} s  "
          f"({n / result['provisioned_s']:.1f} jobs/s)")
    print(f"all Running after children ready  {result['running_s']:7.2f} s")
    print(f"API requests per job (provision)  {len(calls) / n:7.2f}  "
          + ", ".join(f"{agent} {count / n:.2f}" for agent, count in sorted(by_agent.items())))
    for verb, count in sorted(by_verb.items(), key=lambda kv: -kv[1]):
        print(f"    {count / n:6.2f}  {verb}")
    running = collections.Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}"
                                  for c in result["running_calls"])
    print(f"API requests per job (to Running) {len(result['running_calls']) / n:7.2f}  "
          + ", ".join(f"{verb} {count / n:.2f}" for verb, count in sorted(running.items())))
    print(f"API requests per job per minute while idle {result['idle_per_job_min']:.2f}")
    print(f"operator RSS: {result['rss_idle_mb']:.0f} MB before the jobs, {result['rss_mb']:.0f} MB after, "
          f"peak {result['rss_peak_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--status-interval", type=float, default=2.0, help="the operator's --status-interval")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"status interval {args.status_interval} s; one operator process; emulator in this process")
    for n in args.jobs:
        report(bench(n, args.status_interval, args.idle_seconds))


if __name__ == "__main__":
    main()
