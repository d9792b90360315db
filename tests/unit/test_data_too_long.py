"""Prompts that leave no room under rollout.max_sequence_length are dealt with when data is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexrl_runtime.config.schema import DataConfig
from nexrl_runtime.data import DataError, DataLoader


def write(tmp_path: Path, prompts: list[str]) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def test_too_long_prompts_are_filtered_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, ["ab", "abcdef", "abc", "abcdefgh"])
    cfg = DataConfig(path=str(path), batch_size=1, rollout_repeat_n=1, shuffle=False)
    loader = DataLoader(cfg, prompt_length=lambda it: len(it.prompt), max_prompt_length=3)
    assert (len(loader), loader.filtered_too_long) == (2, 2)
    assert [b[0].prompt for b in [loader.next_batch(), loader.next_batch()]] == ["ab", "abc"]


def test_too_long_error_names_the_item(tmp_path: Path) -> None:
    path = write(tmp_path, ["ab", "abcdef"])
    cfg = DataConfig(path=str(path), batch_size=1, rollout_repeat_n=1, too_long="error")
    with pytest.raises(DataError, match=r"item 1 has a prompt of 6 tokens, more than the 3"):
        DataLoader(cfg, prompt_length=lambda it: len(it.prompt), max_prompt_length=3)
