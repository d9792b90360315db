"""Helpers to run the default recipe, shortened, inside a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexrl_runtime.config import load_config
from nexrl_runtime.controller import RunSummary, run_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "arithmetic" / "arithmetic.yaml"


def run_arithmetic(tmp_path: Path, overrides: list[str]) -> tuple[RunSummary, list[dict]]:
    """Run the arithmetic recipe with overrides; return the summary and the RL metric rows."""
    cfg = load_config(RECIPE, [f"output_dir={tmp_path}", "logging.progress_bar=false", *overrides])
    summary = run_recipe(cfg, echo=None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if r["phase"] == "rl" and r["step"] > 0]


@pytest.fixture
def arithmetic(tmp_path: Path):
    return lambda overrides: run_arithmetic(tmp_path, overrides)
