"""The agent worker on a real local Ray: rollout actors build it from the config they are sent
(the recipe folder travels with the rollout section, so the agent config and tools resolve from
any working directory) and its conversations, over the actors' engines, reach the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.launch import run_recipe

pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("ray_session")

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "calculator_agent" / "calculator_agent.yaml"


@pytest.mark.slow
def test_calculator_agent_runs_on_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may resolve against the working directory
    cfg = load_config(RECIPE, [
        f"output_dir={tmp_path / 'run'}", "launch_mode=ray", "logging.progress_bar=false",
        "logging.plot=false",
        "total_steps=2", "warm_start.steps=20", "data.batch_size=4", "validation.limit=8",
        "rollout.num_workers=2",
    ])  # fmt: skip
    summary = run_recipe(cfg, echo=None)
    assert summary.steps == 2 and summary.stats["ray_actor_calls"] > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl" and r["step"] > 0]
    assert len(rl) == 2 and all(r["batch_size"] == 32 for r in rl)
    assert all(r["eval/agent_turns"] >= 1.0 and "eval/agent_tool_calls" in r for r in rl)
