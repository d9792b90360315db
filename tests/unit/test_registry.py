"""Module registry: built-in names and `module_path:ClassName` from a recipe folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexrl_runtime.registry import RegistryError, resolve_class
from nexrl_runtime.rollout import Evaluator


class Builtin(Evaluator):
    def evaluate(self, item, response):  # pragma: no cover - never called
        raise AssertionError


def test_builtin_and_file_classes(tmp_path: Path) -> None:
    (tmp_path / "my_eval.py").write_text(
        "from nexrl_runtime.rollout import Evaluator, EvalResult\n"
        "class Mine(Evaluator):\n"
        "    def evaluate(self, item, response):\n"
        "        return EvalResult(reward=1.0)\n"
        "class NotOne:\n    pass\n"
    )
    assert resolve_class("b", {"b": Builtin}, Evaluator) is Builtin
    mine = resolve_class("my_eval.py:Mine", {}, Evaluator, tmp_path)
    assert mine().evaluate({}, "").reward == 1.0
    assert resolve_class("nexrl_runtime.rollout:Evaluator", {}, Evaluator) is Evaluator


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown Evaluator 'nope'; built-ins are"),
        ("missing.py:X", "does not exist"),
        ("my_eval.py:Absent", "has no attribute 'Absent'"),
        ("my_eval.py:NotOne", "is not a subclass"),
        ("no_such_pkg.mod:X", "cannot import module"),
    ],
)
def test_errors(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "my_eval.py").write_text("class NotOne:\n    pass\n")
    with pytest.raises(RegistryError, match=message):
        resolve_class(spec, {}, Evaluator, tmp_path)
