"""Scores a calculator conversation: reward 1 for the right product as the final answer. The
metrics say how often the model called the tool, and with the problem's own numbers."""

from __future__ import annotations

from typing import Any

from nexrl_runtime.rollout import EvalResult
from nexrl_runtime.rollout.agent import AgentEvaluator, AgentTrace


class CalculatorEvaluator(AgentEvaluator):
    def evaluate_trace(self, item: dict[str, Any], trace: AgentTrace) -> EvalResult:
        right = trace.answer is not None and trace.answer.strip() == str(item["answer"])
        asked = str(item["prompt"]).rstrip("=")
        called = [o for o in trace.calls if o.call.name == "calc"]
        return EvalResult(
            reward=float(right),
            correct=right,
            metrics={
                "used_tool": float(bool(called)),
                "right_call": float(any(o.call.arguments.get("expression") == asked for o in called)),
            },
        )
