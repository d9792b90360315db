"""An answer-format reward: the reply should be just the number. SmolLM2-135M-Instruct rarely
complies at first but often starts with a number, so the shaped reward has spread in most groups
and GRPO moves it within a few steps; brevity then carries it on towards "just the number"."""

from __future__ import annotations

import re
from typing import Any

from nexrl_runtime.rollout import EvalResult, Evaluator


class AnswerFormatEvaluator(Evaluator):
    """reward = 0.5 if the reply starts with a number, plus up to 0.5 more the fewer words follow
    it (1.0: nothing but the number); `correct` says whether the leading number is the sum."""

    def evaluate(self, item: dict[str, Any], response: str) -> EvalResult:
        text = response.strip()
        lead = re.match(r"\d+", text)
        if lead is None:
            return EvalResult(reward=0.0, correct=False)
        brevity = max(0.0, 1.0 - (len(text.split()) - 1) / 10)
        return EvalResult(reward=0.5 + 0.5 * brevity, correct=lead.group() == str(item["answer"]))
