"""Ray mode checkpoints: the trainer actor writes its files into the driver's checkpoint folder
and reads them back on resume; engine actors' generators are saved and restored through the
driver. With one rollout worker a Ray run stopped at step 2 and resumed equals an uninterrupted
local run exactly (local and Ray runs are equal step for step: test_ray_runtime.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexrl_runtime import checkpoint as ckpt
from tests.integration.conftest import run_arithmetic
from tests.integration.test_sync_modes import SMALL

pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("ray_session")

COMMON = [
    *SMALL,
    "rollout.num_workers=1",
    "trainer.grpo.entropy_coef=0.05",
    "warm_start.steps=3",
    "warm_start.batch_size=8",
    "checkpoint.every=2",
]


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def test_ray_save_and_resume_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    _, local = run_arithmetic(tmp_path / "local", [*COMMON, "total_steps=4"])
    ray_args = [*COMMON, "launch_mode=ray", "ray.trainer_failure=restart-from-checkpoint"]
    run_arithmetic(tmp_path / "ray", [*ray_args, "total_steps=2"])
    saved = ckpt.latest_checkpoint(tmp_path / "ray" / "checkpoints")
    assert saved is not None and saved.name == "global_step_2"
    assert {"model.safetensors", "optimizer.pt", "rng.pt"} <= {p.name for p in saved.iterdir()}
    summary, resumed = run_arithmetic(tmp_path / "ray", [*ray_args, "total_steps=4", "resume.mode=auto"])
    assert summary.steps == 4 and summary.stats["ray_pushes"] == 3  # the resumed weights, then steps 3, 4
    assert strip(resumed) == strip(local)
