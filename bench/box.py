"""Seconds from `kubectl apply` to the first RL step and to Succeeded for the CPU twins, run in the
cluster in a box (tests/cluster, docs/box.md). Root only.

    PYTHONPATH=$PWD:$PWD/operator .venv/bin/python bench/box.py [examples/cpu/<twin>.yaml ...]

Default: every twin in examples/cpu, one after another in one box (the GSM8K-shaped ones with their
claim seeded: the converted model and GSM8K-shaped rows). Prints one JSON line per twin:
first_step_s, succeeded_s, the phases seen, the last step and reward.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))

from box import Box  # noqa: E402
from twins import CHART_VALUES, prepare_storage, run_twin  # noqa: E402


def main(paths: list[str]) -> None:
    twins = [pathlib.Path(p) for p in paths] or sorted((REPO / "examples" / "cpu").glob("*.yaml"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="box-bench-") as workdir, \
            Box(pathlib.Path(workdir), chart_values=CHART_VALUES) as box:
        up = round(time.monotonic() - started, 1)
        for path in twins:
            job = yaml.safe_load(path.read_text())
            meta = job["metadata"]
            prepare_storage(box, job)
            run = run_twin(box, path, meta["namespace"], meta["name"], timeout=1800)
            last = run.rows[-1]
            print(json.dumps({"twin": path.name, "box_up_s": up, "first_step_s": run.first_step_s,
                              "succeeded_s": run.done_s, "phases": run.phases(), "step": last.step,
                              "reward": last.reward}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
