"""The default arithmetic recipe (100 RL steps after its warm start) on Ray with N trainer ranks:
held-out accuracy after the warm start and after RL, and the seconds it took.

    .venv/bin/python bench/ray_ranks_learn.py [--ranks 2] [--steps 100]

Too long for the suite (4-5 min on 2 busy cores); the suite checks that 2 ranks train exactly as
one (tests/distributed/test_ray_trainer_ranks.py), and that one rank learns (test_recipe_learns).
Last line: `ray_ranks_learn: ranks=<n> steps=<s> val_before=<a> val_after=<b> seconds=<t>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nexrl_runtime.config import load_config
from nexrl_runtime.distributed import RayController

RECIPE = Path(__file__).resolve().parents[1] / "recipe" / "arithmetic" / "arithmetic.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(RECIPE, [
            f"output_dir={out}", "launch_mode=ray", f"total_steps={args.steps}",
            f"ray.trainer_ranks={args.ranks}", f"validation.every={args.steps}", "ray.trainer.num_cpus=0.5",
            "threads=1", "logging.plot=false",
            "logging.progress_bar=false",
        ])  # fmt: skip
        start = time.perf_counter()
        summary = RayController(cfg, echo=None).run()
        seconds = time.perf_counter() - start
    before, after = summary.val_after_warm_start["val_accuracy"], summary.val_final["val_accuracy"]
    print(f"ray_ranks_learn: ranks={args.ranks} steps={summary.steps} val_before={before:.3f} "
          f"val_after={after:.3f} seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
