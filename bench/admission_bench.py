"""Admission benchmark: how long one admission decision over the whole cluster takes.

    .venv/bin/python bench/admission_bench.py                  # 1,000 jobs, 50 quotas
    .venv/bin/python bench/admission_bench.py --jobs 5000 --quotas 200 --repeat 20

The operator re-plans every job at once after each change (``admission.plan``), so the figure
that matters is the time of one plan. Scenarios:

* ``spread``: jobs over 2 namespaces per quota (a fifth of the quotas select theirs by label),
  half the jobs admitted, GPU types on every third quota, a ResourceQuota on every fifth namespace,
  per-namespace priorities and weights; most quotas have a queue.
* ``one-queue``: every job in one namespace of one quota (the other quotas idle): 1 job admitted,
  the rest in one long queue (the worst case for ordering and reservations).

It also times ``quota_views.job_view`` (parsing one NexRLJob object into admission's input, done
by the index on every watch event of a job).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from nexrl_operator.admission import Demand, Quota, ResourceQuotaLimit, plan
from nexrl_operator.quota_api import NexRLQuotaSpec
from nexrl_operator.quota_views import job_view

H100 = {"nvidia.com/gpu.product": "H100"}
A100 = {"nvidia.com/gpu.product": "A100"}


def _time(stamp: int) -> str:
    day, hour, minute, second = 1 + stamp // 86400, stamp // 3600 % 24, stamp // 60 % 60, stamp % 60
    return f"2026-01-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


Workload = tuple[list[Demand], list[Quota], dict[str, dict[str, str]], list[ResourceQuotaLimit]]


def spread(jobs: int, quotas: int, rng: random.Random) -> Workload:
    namespaces = {f"ns-{i}": {"team": f"t{i // 2}"} for i in range(2 * quotas)}
    out_quotas = []
    for q in range(quotas):
        spec: dict[str, Any] = {"gpus": rng.choice([16, 32, 64]), "maxGpusPerJob": 32,
                                "maxRunningJobs": rng.choice([None, 8]),
                                "namespaceSettings": [{"namespace": f"ns-{2 * q}", "weight": 2}]}
        if q % 5 == 0:
            spec["namespaceSelector"] = {"matchLabels": {"team": f"t{q}"}}
        else:
            spec["namespaces"] = [f"ns-{2 * q}", f"ns-{2 * q + 1}"]
        if q % 3 == 0:
            spec["gpuTypes"] = [{"name": "h100", "nodeLabels": H100, "gpus": 8},
                                {"name": "a100", "nodeLabels": A100, "gpus": 24}]
        out_quotas.append(Quota(f"q{q}", _time(q), NexRLQuotaSpec.model_validate(spec)))
    demands = []
    for j in range(jobs):
        gpus = rng.choice([1, 2, 4, 8, 16])
        ns = f"ns-{rng.randrange(2 * quotas)}"
        demands.append(Demand(uid=f"uid-{j}", namespace=ns, name=f"job-{j}", created=_time(1000 + j),
                              gpus=gpus, priority=rng.choice([0, 0, 1]),
                              node_selector=rng.choice([{}, H100, A100]), admitted=gpus if j % 2 else None,
                              running=j % 4 == 1))
    limits = [ResourceQuotaLimit(f"ns-{i}", "gpus", "nvidia.com/gpu", 48, 4) for i in range(0, 2 * quotas, 5)]
    return demands, out_quotas, namespaces, limits


def one_queue(jobs: int, quotas: int, rng: random.Random) -> Workload:
    out_quotas = [Quota(f"q{q}", _time(q), NexRLQuotaSpec(namespaces=[f"ns-{q}"], gpus=64))
                  for q in range(quotas)]
    demands = [Demand(uid=f"uid-{j}", namespace="ns-0", name=f"job-{j}", created=_time(1000 + j),
                      gpus=rng.choice([1, 2, 4, 8]) if j else 64, admitted=64 if j == 0 else None)
               for j in range(jobs)]
    return demands, out_quotas, {}, []


def measure(fn: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each run (CPU time is what a loaded machine inflates least)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _ms(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"{statistics.median(ms):6.2f} ms median, {ms[int(0.95 * len(ms)) - 1]:6.2f} p95"


def job_body(i: int) -> dict[str, Any]:
    return {"apiVersion": "nexrl.io/v1alpha1", "kind": "NexRLJob",
            "metadata": {"name": f"job-{i}", "namespace": "team-a", "uid": f"uid-{i}", "generation": 1,
                         "creationTimestamp": _time(i)},
            "spec": {"recipe": "/app/recipe/gsm8k/gsm8k.yaml", "image": "nexrl:bench", "model": {"name": "m"},
                     "inference": {"replicas": 2}, "trainer": {"nodes": 1, "gpusPerNode": 2}},
            "status": {"phase": "Queued", "observedGeneration": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--quotas", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(7)
    print(f"{args.jobs} jobs, {args.quotas} quotas, {args.repeat} runs each")
    for name, build in (("spread", spread), ("one-queue", one_queue)):
        demands, quotas, namespaces, limits = build(args.jobs, args.quotas, rng)
        result = plan(demands, quotas, namespaces, limits)
        states: dict[str, int] = {}
        for decision in result.decisions.values():
            states[decision.state.value] = states.get(decision.state.value, 0) + 1
        wall, cpu = measure(lambda d=demands, q=quotas, n=namespaces, r=limits: plan(d, q, n, r), args.repeat)
        per_job = 1e6 * statistics.median(cpu) / args.jobs
        print(f"  {name:9s}: plan wall {_ms(wall)}; cpu {_ms(cpu)} ({per_job:.1f} us per job); {states}")
    bodies = [job_body(i) for i in range(args.jobs)]
    _, cpu = measure(lambda: [job_view(b) for b in bodies], max(3, args.repeat // 10))
    per_job = 1e6 * statistics.median(cpu) / args.jobs
    print(f"  job_view : {per_job:.1f} us cpu per job (the index digest, on every watch event of a job)")
    print(f"  load average while measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
