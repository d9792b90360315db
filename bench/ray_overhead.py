"""Steps/s of the default recipe in local vs Ray mode, and what Ray costs per step.

    .venv/bin/python bench/ray_overhead.py [--steps 20] [--skip 2] [hydra overrides...]

Both runs: the arithmetic recipe without warm start or validation (they are the same code in both
modes), `sync` weight sync, same seed. Ray is started here with every core. Reported:
  * steps/s over the timed steps (the first `--skip` are warm-up), and per-step phase means;
  * actor calls per step, the weights' bytes per push (one ray.put, each engine reads it from the
    object store), the push time, the driver<->actor bytes of a batch;
  * micro-costs measured on the same Ray: an empty actor call, a call carrying one batch, and
    ray.put + a remote read of the packed weights.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import ray

from nexrl_runtime.config import load_config
from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.controller import Controller, RunSummary
from nexrl_runtime.distributed import RayController, connect, shutdown
from nexrl_runtime.distributed.weights import pack

RECIPE = Path(__file__).resolve().parents[1] / "recipe" / "arithmetic" / "arithmetic.yaml"
PHASES = ("step_seconds", "rollout_seconds", "train_seconds", "sync_seconds", "wait_seconds")
FIXED = ["warm_start.steps=0", "validation.path=null", "logging.plot=false", "logging.progress_bar=false"]


def config(out: str, mode: str, steps: int, overrides: list[str]) -> NexRLConfig:
    base = [f"output_dir={out}", f"launch_mode={mode}", f"total_steps={steps}"]
    return load_config(RECIPE, [*base, *FIXED, *overrides])


def timed(ctrl: Controller, skip: int) -> tuple[RunSummary, dict[str, float]]:
    """Run; steps/s and phase means over the steps after the first `skip`."""
    summary = ctrl.run()
    rows = [r for r in ctrl.tracker.history if r["phase"] == "rl" and r["step"] > skip]
    out = {k: statistics.mean(r.get(k, 0.0) for r in rows) for k in PHASES}
    out["steps_per_s"] = 1.0 / out["step_seconds"]
    return summary, out


class Echo:
    """A bare actor for round-trip costs."""

    def echo(self, x: object) -> object:
        return x

    def size(self, packed: object) -> int:
        return sum(a.nbytes for a in packed.arrays.values())  # type: ignore[attr-defined]


def micro(ctrl: RayController, n: int = 200) -> dict[str, float]:
    """Per-call costs on this Ray: empty call, a call with one batch, ray.put + remote read of weights."""
    actor = ray.remote(num_cpus=0)(Echo).remote()
    ray.get(actor.echo.remote(None))

    def per_call(payload: object) -> float:
        start = time.perf_counter()
        for _ in range(n):
            ray.get(actor.echo.remote(payload))
        return (time.perf_counter() - start) / n

    batch = ctrl.pool_sample
    packed = pack(ctrl.model.state_dict())
    out = {
        "empty_call_ms": 1e3 * per_call(None),
        "batch_call_ms": 1e3 * per_call(batch),
        "batch_kbytes": len(pickle.dumps(batch)) / 1e3,
        "weights_mbytes": packed.nbytes / 1e6,
    }
    ray.get(actor.size.remote(ray.put(packed)))  # the first read imports torch in the actor
    start = time.perf_counter()
    for _ in range(20):
        ray.get(actor.size.remote(ray.put(packed)))
    out["weights_put_and_remote_read_ms"] = 1e3 * (time.perf_counter() - start) / 20
    ray.kill(actor)
    return out


class SampledRayController(RayController):
    """Keeps one trained batch, for the micro-benchmarks."""

    pool_sample: object = None

    def _next_fresh_batch(self, manager, step):  # type: ignore[no-untyped-def]
        batch = super()._next_fresh_batch(manager, step)
        self.pool_sample = batch
        return batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the means")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    report: dict[str, object] = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        local_cfg = config(f"{tmp}/local", "local", args.steps, args.overrides)
        _, report["local"] = timed(Controller(local_cfg, echo=None), args.skip)

        ray_cfg = config(f"{tmp}/ray", "ray", args.steps, args.overrides)
        start = time.perf_counter()
        connect(ray_cfg)
        report["ray_init_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ctrl = SampledRayController(ray_cfg, echo=None)
        report["ray_actors_up_s"] = time.perf_counter() - start
        summary, report["ray"] = timed(ctrl, args.skip)
        stats = summary.stats
        report["ray_per_step"] = {
            "actor_calls": stats["ray_actor_calls"] / summary.steps,
            "push_ms": 1e3 * stats["ray_push_seconds_mean"],
            "weights_mbytes_per_push": stats["ray_push_mbytes"],
        }
        report["ray_micro"] = micro(ctrl)
    shutdown()
    local, remote = report["local"], report["ray"]
    assert isinstance(local, dict) and isinstance(remote, dict)
    report["ray_overhead_ms_per_step"] = 1e3 * (remote["step_seconds"] - local["step_seconds"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
