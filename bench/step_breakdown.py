"""Where an RL step of the default recipe goes: generation, scoring, training, weight sync, and the rest
(framework overhead), per step and summarised, plus peak memory. Target: overhead < 10% of step time.

    .venv/bin/python bench/step_breakdown.py [--steps 30] [-c RECIPE] [hydra overrides...]

Runs the recipe in-process through the Controller (warm start included, as the recipe says) in `sync`
weight-sync mode, so that the phases of a step happen one after another and add up. See README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, fields

from recipe_bench import (
    DEFAULT_RECIPE,
    load_note,
    load_recipe,
    mean_median,
    peak_rss_mib,
    recipe_fingerprint,
)

from nexrl_runtime.config import NexRLConfig
from nexrl_runtime.controller import Controller, RunSummary

TARGET = 0.10


class ProbedController(Controller):
    """The Controller plus timestamps the metrics lack: when RL starts, when each step ends (the
    `step_done` that lets the next rollout start), and each worker's generate/score seconds."""

    def __init__(self, config: NexRLConfig, timed_steps: int) -> None:
        super().__init__(config, echo=open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the run)
        self.timed_steps = timed_steps
        self.warm_start_seconds = 0.0
        self.rl_start = 0.0
        self.step_ends: list[float] = []
        self.rss_after_warm_start = 0.0
        self.rss_after_timed = 0.0
        self.worker_timings: list[list[dict[str, float]]] = [[] for _ in self.workers]
        for i, w in enumerate(self.workers):
            w.pop_timings = self._keep(w.pop_timings, self.worker_timings[i])  # type: ignore[method-assign]
        step_done = self.sync.step_done

        def timed_step_done(steps: int) -> None:
            self.step_ends.append(time.perf_counter())
            if steps == self.timed_steps:  # the traced steps after this one are not timed
                self.rss_after_timed = peak_rss_mib()
                tracemalloc.start()
            step_done(steps)

        self.sync.step_done = timed_step_done  # type: ignore[method-assign]

    @staticmethod
    def _keep(pop, sink: list[dict[str, float]]):
        def pop_and_keep() -> dict[str, float]:
            out = pop()
            sink.append(dict(out))
            return out

        return pop_and_keep

    def _warm_start(self, summary: RunSummary) -> None:
        start = time.perf_counter()
        super()._warm_start(summary)
        self.rss_after_warm_start = peak_rss_mib()
        self.rl_start = time.perf_counter()
        self.warm_start_seconds = self.rl_start - start


@dataclass
class Row:
    """One step, in seconds: `wall` is the time since the previous step ended."""

    step: int
    wall: float
    generation: float
    scoring: float
    training: float
    sync: float
    overhead: float
    in_rollout: float  # the part of `overhead` inside the rollout (prompts, dispatch, trajectories)


def rows_of(ctl: ProbedController, steps: int) -> list[Row]:
    """Join the controller's per-step metrics with the probe's timestamps and worker timings."""
    metrics = {r["step"]: r for r in ctl.tracker.history if r.get("phase") == "rl" and r["step"] >= 1}
    out, prev = [], ctl.rl_start
    for k in range(1, steps + 1):
        m, end = metrics[k], ctl.step_ends[k - 1]
        # Workers run in parallel threads; the one that finished last is the batch's critical path.
        per_worker = [t[k - 1] for t in ctl.worker_timings if len(t) >= k]
        crit = max(per_worker, key=lambda t: t.get("generate_seconds", 0) + t.get("score_seconds", 0))
        gen, score = crit.get("generate_seconds", 0.0), crit.get("score_seconds", 0.0)
        train, sync = m["train_seconds"], m["sync_seconds"]
        wall = end - prev
        prev = end
        in_rollout = m["rollout_seconds"] - gen - score
        out.append(Row(k, wall, gen, score, train, sync, wall - gen - score - train - sync, in_rollout))
    return out


def print_report(rows: list[Row], ctl: ProbedController, heap_peak: int, heap_steps: int) -> bool:
    """Per-step table, mean/median, the overhead verdict and memory; True if the target is met."""
    cols = [f.name for f in fields(Row)][1:]
    print(f"{'seconds':<18}" + "".join(f"{c:>11}" for c in cols) + "  overhead%")
    for r in rows:
        vals = [getattr(r, c) for c in cols]
        share = 100 * r.overhead / r.wall
        print(f"{f'step {r.step}':<18}" + "".join(f"{v:11.4f}" for v in vals) + f"{share:11.1f}")
    for name, sel in (("all", rows), ("from step 2", rows[1:])):
        for label, idx in (("mean", 0), ("median", 1)):
            stats = [mean_median([getattr(r, c) for r in sel])[idx] for c in cols]
            print(f"{f'{label} {name}':<18}" + "".join(f"{v:11.4f}" for v in stats))
    total = sum(r.wall for r in rows)
    share = sum(r.overhead for r in rows) / total
    steady = sum(r.overhead for r in rows[1:]) / max(sum(r.wall for r in rows[1:]), 1e-9)
    in_rollout = sum(r.in_rollout for r in rows) / total
    met = share < TARGET
    print(
        f"\noverhead: {100 * share:.1f}% of step time over {len(rows)} steps "
        f"({100 * steady:.1f}% from step 2; "
        f"{100 * in_rollout:.1f} points of it inside the rollout) -> target < {100 * TARGET:.0f}%: "
        f"{'MET' if met else 'NOT MET'}"
    )
    rl = [r for r in ctl.tracker.history if r["phase"] == "rl" and 1 <= r["step"] <= len(rows)]
    reported = sum(r["step_seconds"] for r in rl)
    print(
        f"RL: {total:.2f} s wall for {len(rows)} steps "
        f"(the controller's step_seconds add up to {reported:.2f} s: "
        f"they miss the part of each rollout that overlaps the previous step's logging); "
        f"warm start {ctl.warm_start_seconds:.1f} s"
    )
    print(
        f"peak RSS: {ctl.rss_after_warm_start:.0f} MiB after setup + warm start, "
        f"{ctl.rss_after_timed:.0f} MiB after the timed steps; Python heap (tracemalloc) peak "
        f"{heap_peak / 2**20:.1f} MiB allocated during {heap_steps} extra untimed steps "
        "(torch tensor storage is not included)"
    )
    return met


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed RL steps (default 30)")
    ap.add_argument("--heap-steps", type=int, default=3, help="extra steps traced by tracemalloc, not timed")
    ap.add_argument("-c", "--config", default=DEFAULT_RECIPE, help="recipe (default: the arithmetic recipe)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for `nexrl run`")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = load_recipe(args.config, args.overrides)
    if recipe.weight_sync.mode != "sync":
        print(
            f"note: the recipe's weight_sync.mode is {recipe.weight_sync.mode}; timing in sync mode, where "
            "generation does not overlap training, so the phases add up to the step"
        )
    with tempfile.TemporaryDirectory(prefix="nexrl-bench-") as out:
        forced = [
            f"total_steps={args.steps + args.heap_steps}",
            "weight_sync.mode=sync",
            "validation.path=null",  # held-out evaluation is not part of a step
            f"output_dir={out}",
        ]
        cfg = load_recipe(args.config, [*args.overrides, *forced])
        print(f"recipe {args.config} ({recipe_fingerprint(cfg)}); {load_note()} at start", flush=True)
        ctl = ProbedController(cfg, args.steps)
        summary = ctl.run()
        heap_peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
        tracemalloc.stop()
    if summary.steps < args.steps:
        print(f"the run stopped after {summary.steps} steps", file=sys.stderr)
        return 1
    print(f"{load_note()} at end\n")
    print_report(rows_of(ctl, args.steps), ctl, heap_peak, summary.steps - args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
