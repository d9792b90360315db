"""The calculator agent recipe, shortened, learns to use its tool: RL raises held-out success
clearly above the warm start, which imitates a teacher that calls the tool only now and then; the
agent's metrics (tool calls, the evaluator's own) reach metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.launch import run_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "calculator_agent" / "calculator_agent.yaml"


@pytest.mark.slow
def test_calculator_agent_learns_to_call_its_tool(tmp_path: Path) -> None:
    overrides = ["total_steps=12", "validation.every=12", "validation.limit=100", "warm_start.steps=300"]
    cfg = load_config(RECIPE, [f"output_dir={tmp_path}", "logging.progress_bar=false", "logging.plot=false",
                               *overrides])  # fmt: skip
    summary = run_recipe(cfg, echo=None)
    before = summary.val_after_warm_start["val_accuracy"]
    after = summary.val_final["val_accuracy"]
    print(f"held-out success: warm start {before:.3f} -> after 12 RL steps {after:.3f}")
    assert before <= 0.5  # greedy decoding after the warm start calls the tool for few problems
    assert after >= before + 0.4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl" and r["step"] > 0]
    assert len(rl) == 12
    first, last = rl[:3], rl[-3:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "eval/agent_tool_calls") > mean(first, "eval/agent_tool_calls") + 0.3
    assert mean(last, "eval/used_tool") > 0.8 and mean(last, "reward_mean") > mean(first, "reward_mean") + 0.2
    logged = {"eval/right_call", "eval/agent_turns", "eval/agent_tool_errors", "eval/agent_truncated"}
    assert logged <= set(rl[0])
