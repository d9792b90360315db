"""Steps/s of the GSM8K CPU twin in the cluster box vs the same recipe run locally with
`inference.engine: vllm` (issue 12's figure). Root only (the box).

    PYTHONPATH=$PWD:$PWD/operator .venv/bin/python bench/box_vs_local.py [--steps 6] [--skip-local]

Both runs take the twin's overrides (examples/cpu/nexrljob-gsm8k-cpu.yaml) with `total_steps` set
to `--steps`, the converted SmolLM2-135M-Instruct, the same 4 GSM8K-shaped rows and the same vLLM
flags, 2 replicas each. In the box: Ray (2 rollout actors, a trainer actor) against 2 vLLM pods
over HTTP, disk pushes through the claim. Locally: one process, 2 `vllm serve` children. The figure
is the runtime's own `step_seconds` (metrics.jsonl) over steps 2..N, so the start-up is left out of
both; one JSON line per side, then `box_vs_local: box_s=.. local_s=.. ratio=..`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))

from box import Box  # noqa: E402
from twins import CHART_VALUES, GSM8K_ROWS, prepare_claim, run_twin  # noqa: E402

TWIN = REPO / "examples" / "cpu" / "nexrljob-gsm8k-cpu.yaml"


def step_seconds(metrics: pathlib.Path) -> list[float]:
    """`step_seconds` of the RL steps after the first (the first carries the engines' warm-up)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["step_seconds"] for r in rows if r["phase"] == "rl" and r["step"] > 1 and "step_seconds" in r]


def twin_overrides(steps: int) -> list[str]:
    job = yaml.safe_load(TWIN.read_text())
    return [o for o in job["spec"]["overrides"] if not o.startswith("total_steps=")] + [
        f"total_steps={steps}"
    ]


def in_box(steps: int, workdir: pathlib.Path) -> dict[str, object]:
    job = yaml.safe_load(TWIN.read_text())
    name = job["metadata"]["name"] = "smollm2-gsm8k-bench"
    job["spec"]["overrides"] = twin_overrides(steps)
    manifest = workdir / "twin.yaml"
    manifest.write_text(yaml.safe_dump(job))
    (workdir / "box").mkdir()
    with Box(workdir / "box", chart_values=CHART_VALUES) as box:
        prepare_claim(box, "team-a", "nexrl-shared")
        run = run_twin(box, manifest, "team-a", name, timeout=1800)
        seconds = step_seconds(box.workdir / "pvc" / "team-a" / "nexrl-shared" / name / "metrics.jsonl")
    return {
        "side": "box",
        "phases": run.phases(),
        "first_step_s": run.first_step_s,
        "succeeded_s": run.done_s,
        "step_s": statistics.mean(seconds),
        "steps_timed": len(seconds),
    }


def local(steps: int, workdir: pathlib.Path) -> dict[str, object]:
    from nexrl_runtime.models.convert import convert

    data = workdir / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    out = workdir / "local"
    args = yaml.safe_load(TWIN.read_text())["spec"]["inference"]["args"]
    extra = [a for a in args if a not in ("--max-model-len", "512", "--dtype", "float32")]
    command = [
        str(REPO / ".venv" / "bin" / "nexrl"), "run", "-c", str(REPO / "recipe" / "gsm8k" / "gsm8k.yaml"),
        *twin_overrides(steps), f"model.path={convert()}", f"data.path={data}", f"validation.path={data}",
        f"output_dir={out}", "inference.engine=vllm", "inference.replicas=2",
        "inference.server.max_model_len=512", "inference.server.dtype=float32",
        "inference.server.extra_args=[" + ",".join(f"'{a}'" for a in extra) + "]",
        "logging.progress_bar=false", "logging.plot=false",
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = step_seconds(out / "metrics.jsonl")
    return {
        "side": "local",
        "wall_s": round(time.monotonic() - started, 1),
        "step_s": statistics.mean(seconds),
        "steps_timed": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="box-vs-local-") as tmp:
        box = in_box(args.steps, pathlib.Path(tmp))
        print(json.dumps(box), flush=True)
        if args.skip_local:
            return
        here = local(args.steps, pathlib.Path(tmp))
        print(json.dumps(here), flush=True)
    box_s, local_s = float(box["step_s"]), float(here["step_s"])  # type: ignore[arg-type]
    print(f"box_vs_local: box_s={box_s:.2f} local_s={local_s:.2f} ratio={box_s / local_s:.2f}")


if __name__ == "__main__":
    main()
