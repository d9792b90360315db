"""Evaluator: the recipe's scorer. Subclass it in the recipe's `evaluator.py`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from nexrl_runtime.config.errors import ConfigError


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


def make_evaluator(cls: type[Evaluator], field: str = "rollout.evaluator") -> Evaluator:
    """`cls()`: the recipe's evaluator takes no arguments; one that cannot be made is a ConfigError."""
    try:
        return cls()
    except Exception as err:  # the recipe's code: say what failed, not a traceback
        raise ConfigError(f"{field}: {cls.__name__}() failed: {type(err).__name__}: {err} "
                          "(an evaluator is built with no arguments)") from err
