"""Scores an addition answer against the true sum: the verifiable reward GRPO trains on."""

from __future__ import annotations

from typing import Any

from nexrl_runtime.rollout import EvalResult, Evaluator


class ArithmeticEvaluator(Evaluator):
    """reward 1 for the exact answer (digits reversed, as in the data), else 0."""

    def evaluate(self, item: dict[str, Any], response: str) -> EvalResult:
        exact = response.strip() == str(item["answer"])
        return EvalResult(reward=float(exact), correct=exact)
