"""Scores an addition answer: exact match is correct; partial credit per right digit shapes the reward."""

from __future__ import annotations

from typing import Any

from nexrl_runtime.rollout import EvalResult, Evaluator


def digit_credit(response: str, answer: str) -> float:
    """Fraction of positions where the digits agree, over the longer of the two strings."""
    if not response and not answer:
        return 1.0
    hits = sum(r == a for r, a in zip(response, answer, strict=False))
    return hits / max(len(response), len(answer))


class ArithmeticEvaluator(Evaluator):
    """reward = exact + partial_weight * digit credit; `correct` is the exact match."""

    partial_weight = 0.5

    def evaluate(self, item: dict[str, Any], response: str) -> EvalResult:
        answer = str(item["answer"])
        response = response.strip()
        exact = response == answer
        return EvalResult(
            reward=float(exact) + self.partial_weight * digit_credit(response, answer), correct=exact
        )
