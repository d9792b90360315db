"""Evaluator: the recipe's scorer. Subclass it in the recipe's `evaluator.py`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalResult:
    """The reward to train on and, separately, whether the answer is right (for accuracy curves)."""

    reward: float
    correct: bool | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Evaluator(ABC):
    """Scores one response to one data item. Must be pure and thread safe."""

    @abstractmethod
    def evaluate(self, item: dict[str, Any], response: str) -> EvalResult: ...
