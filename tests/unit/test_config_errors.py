"""config.errors: pydantic errors in words, the one wording of the runtime's loader and the operator."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel, Field, ValidationError

from nexrl_runtime.config.errors import field_path, problem_lines, problem_text, problems
from nexrl_runtime.config.schema import NexRLConfig


class Inner(BaseModel, extra="forbid"):
    size: int | str = 1
    name: str = Field(..., min_length=1)


class Outer(BaseModel, extra="forbid"):
    inner: Inner
    items: list[Inner] = []
    limits: dict[str, int] = {}


def words(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return problems(info.value, Outer)


def test_paths_read_like_the_field():
    assert field_path(("a", "b", 0, "c")) == "a.b[0].c"
    assert field_path(("limits", "nvidia.com/gpu"), "spec") == "spec.limits['nvidia.com/gpu']"
    assert field_path(()) == "<root>"


def test_required_unknown_and_values_in_words():
    assert words({}) == [("inner", "is required")]  # not the whole parent dict as its value
    assert words({"inner": {"name": "x", "nmae": 1}}) == [
        ("inner.nmae", "unknown field (did you mean 'name'?)")]
    assert words({"inner": {"name": ""}}) == [("inner.name", "must not be empty (got '')")]
    assert words({"inner": {"name": "x", "size": 0.5}}) == [
        ("inner.size", "must be an integer or a string (got 0.5)")]
    assert words({"inner": {"name": "x"}, "items": [{"name": "y", "size": []}]}) == [
        ("items[0].size", "must be an integer or a string (got [])")]
    assert words({"inner": {"name": "x"}, "limits": {"a.b/c": "many"}}) == [
        ("limits['a.b/c']", "must be an integer (got 'many')")]


def test_problem_text_joins_sentences():
    assert problem_text("spec.image", "is required") == "spec.image is required"
    assert problem_text("spec.gpus", "unknown field") == "spec.gpus: unknown field"


def test_the_runtime_schema_in_words():
    with pytest.raises(ValidationError) as info:
        NexRLConfig.model_validate({"data": {"path": "d"}, "trainer": {"bogus": 1}})
    assert problem_lines(info.value, NexRLConfig, "spec.config") == [
        "spec.config.rollout is required", "spec.config.trainer.bogus: unknown field"]


def test_pydantic_only():
    code = ("import sys\nfor m in ('torch', 'hydra', 'omegaconf'): sys.modules[m] = None\n"
            "import nexrl_runtime.config.errors, nexrl_runtime.config.schema")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
