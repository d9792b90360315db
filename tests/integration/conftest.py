"""Helpers to run the default recipe, shortened, inside a test; the test doubles of tests/support
(fake OpenAI server, threaded server) made importable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.controller import RunSummary
from nexrl_runtime.launch import run_recipe

SUPPORT = str(Path(__file__).resolve().parents[1] / "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "arithmetic" / "arithmetic.yaml"
SHRINK = [
    "warm_start.steps=0",
    "model.hidden_size=32",
    "model.num_layers=1",
    "data.batch_size=4",
    "data.rollout_repeat_n=4",
    "validation.limit=4",
]
"""Overrides that shrink the arithmetic recipe to steps of well under a second (tests add the rest)."""


def run_arithmetic(tmp_path: Path, overrides: list[str]) -> tuple[RunSummary, list[dict]]:
    """Run the arithmetic recipe with overrides; return the summary and the RL metric rows."""
    cfg = load_config(RECIPE, [f"output_dir={tmp_path}", "logging.progress_bar=false", *overrides])
    summary = run_recipe(cfg, echo=None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if r["phase"] == "rl" and r["step"] > 0]


@pytest.fixture
def arithmetic(tmp_path: Path):
    return lambda overrides: run_arithmetic(tmp_path, overrides)
