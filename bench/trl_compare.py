"""NexRL vs TRL's GRPOTrainer on the default recipe, in one invocation: RL wall time to the held-out
accuracy target (evaluation excluded) and seconds per step, from the same warm-started weights.

    bash bench/setup_trl.sh          # once: .venv-bench with TRL (never a NexRL dependency)
    .venv-bench/bin/python bench/trl_compare.py [--target 0.9] [--eval-every K] [--max-steps N]
        [--max-seconds S] [--sides nexrl trl] [-c RECIPE] [hydra overrides...]

Hyperparameters come from the recipe (and the overrides); see README.md for what could not be matched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from race import Race, RaceResult
from recipe_bench import (
    DEFAULT_RECIPE,
    HeldOutEval,
    State,
    load_note,
    load_recipe,
    recipe_fingerprint,
    warm_started_state,
)

from nexrl_runtime.config import NexRLConfig
from nexrl_runtime.controller import Controller


class StopRun(Exception):
    """Raised from the step hook when the race is over; the controller cleans up as it propagates."""


class RacedController(Controller):
    """NexRL's Controller reporting each step end to a race: after the weight push and before
    `step_done` lets the next rollout start, so an evaluation there overlaps nothing."""

    def __init__(self, config: NexRLConfig, race: Race) -> None:
        super().__init__(config, echo=open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the run)
        step_done = self.sync.step_done

        def raced_step_done(steps: int) -> None:
            if race.step_end(steps, self.model.state_dict):
                raise StopRun
            step_done(steps)

        self.sync.step_done = raced_step_done  # type: ignore[method-assign]


def run_nexrl(recipe: str, overrides: list[str], warm: State, race: Race, out_dir: str) -> RaceResult:
    """The recipe's RL loop from the warm-started weights (its own warm start and validation off)."""
    forced = [
        "warm_start.steps=0",
        "validation.path=null",
        f"total_steps={race.max_steps}",
        f"output_dir={out_dir}",
        "logging.progress_bar=false",
        "logging.plot=false",
    ]
    start = time.perf_counter()
    ctl = RacedController(load_recipe(recipe, [*overrides, *forced]), race)
    ctl.model.load_state_dict(warm)
    ctl.engine.load_weights(warm, ctl.sync.version)
    race.result.setup_seconds = time.perf_counter() - start
    race.start()
    with contextlib.suppress(StopRun):
        ctl.run()
    return race.result


def report(results: list[RaceResult], target: float) -> None:
    """The side-by-side table, each accuracy curve, and which side reached the target first."""
    print(
        f"\n{'side':<6} {'setup s':>8} {'steps':>6} {'RL s':>8} {'eval s':>7} {'s/step':>7} {'median':>7}"
        f" {'final acc':>9}  target {target} reached"
    )
    for r in results:
        mean, median = r.per_step
        hit = f"step {r.reached[0]} after {r.reached[1]:.1f} s" if r.reached else f"no ({r.stop_reason})"
        print(
            f"{r.name:<6} {r.setup_seconds:8.1f} {r.steps:6d} {r.rl_seconds:8.1f} {r.eval_seconds:7.1f}"
            f" {mean:7.3f} {median:7.3f} {r.final_accuracy:9.3f}  {hit}"
        )
    for r in results:
        print(f"{r.name} accuracy: " + ", ".join(f"{s}:{a:.3f}@{t:.0f}s" for s, a, t in r.curve))
    by = {r.name: r for r in results}
    if "nexrl" in by and "trl" in by:
        n, t = by["nexrl"].reached, by["trl"].reached
        if n and t:
            print(f"time to target: NexRL {n[1]:.1f} s vs TRL {t[1]:.1f} s (x{t[1] / n[1]:.2f})")
        elif n or t:
            print(f"only {'NexRL' if n else 'TRL'} reached the target within the caps")
        else:
            print("neither side reached the target within the caps: compare seconds per step and accuracy")


def describe(cfg: NexRLConfig) -> str:
    """The recipe settings both sides share, and its fingerprint."""
    g, s = cfg.trainer.grpo, cfg.rollout.sampling
    return (
        f"fingerprint {recipe_fingerprint(cfg)}, batch {cfg.data.batch_size} x group "
        f"{cfg.data.rollout_repeat_n}, lr {cfg.trainer.optim.lr}, loss {g.loss_agg}, kl {g.kl_coef}, "
        f"T {s.temperature}, max_new_tokens {s.max_new_tokens}, warm start {cfg.warm_start.steps} steps"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.9, help="held-out greedy accuracy to reach")
    ap.add_argument("--eval-every", type=int, help="evaluate every K steps (default: validation.every)")
    ap.add_argument("--max-steps", type=int, help="step cap per side (default: the recipe's total_steps)")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="RL seconds cap per side")
    ap.add_argument("--sides", nargs="+", choices=["nexrl", "trl"], default=["nexrl", "trl"])
    ap.add_argument("-c", "--config", default=DEFAULT_RECIPE, help="recipe (default: the arithmetic recipe)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for `nexrl run`")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "trl" in args.sides:
        try:
            import trl_side
        except ImportError as err:
            sys.exit(f"{err}: run `bash bench/setup_trl.sh`, then use .venv-bench/bin/python")
    cfg = load_recipe(args.config, args.overrides)
    notes = trl_side.mismatches(cfg) if "trl" in args.sides else []  # exits on what TRL cannot mirror
    every, max_steps = args.eval_every or cfg.validation.every, args.max_steps or cfg.total_steps
    print(
        f"recipe {args.config}: {describe(cfg)}; eval every {every}, caps {max_steps} steps / "
        f"{args.max_seconds:.0f} s per side; {load_note()}",
        flush=True,
    )
    start = time.perf_counter()
    warm, model, tok = warm_started_state(cfg)
    evaluate = HeldOutEval(cfg, model, tok)
    print(
        f"warm start: {time.perf_counter() - start:.1f} s, held-out accuracy {evaluate(warm):.3f}", flush=True
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="nexrl-vs-trl-") as out:
        for side in args.sides:
            race = Race(side, evaluate, args.target, every, max_steps, args.max_seconds)
            print(f"{side}: starting ({load_note()})", flush=True)
            if side == "nexrl":
                r = run_nexrl(args.config, args.overrides, warm, race, f"{out}/nexrl")
            else:
                r = trl_side.run_trl(cfg, warm, race, f"{out}/trl")
            results.append(r)
            print(
                f"{side}: {r.steps} steps, {r.rl_seconds:.1f} s, accuracy {r.final_accuracy:.3f}, "
                f"{r.stop_reason} ({load_note()})",
                flush=True,
            )
    report(results, args.target)
    if notes:
        print("mismatches left:\n  - " + "\n  - ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
