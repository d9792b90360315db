"""Scores a GSM8K response against the reference number: the verifiable reward GRPO trains on."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from nexrl_runtime.rollout import EvalResult, Evaluator

NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
"""An integer or decimal, with optional thousands commas; a minus right after a digit is an operator."""
MARKED = re.compile(r"####\s*\$?\s*(" + NUMBER.pattern + ")")
BOXED = "\\boxed{"


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}`, with nested braces (e.g. `\\boxed{\\frac{1}{2}}`)."""
    out, start = [], text.find(BOXED)
    while start != -1:
        depth, i = 1, start + len(BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[start + len(BOXED) : i - 1])
        start = text.find(BOXED, i)
    return out


def final_answer(text: str) -> tuple[str | None, bool]:
    """The final number, commas removed, and whether it was marked (`#### N` or `\\boxed{N}`);
    otherwise the last number in the text, unmarked; (None, False) when there is none."""
    marked = MARKED.findall(text)
    if marked:
        return marked[-1].replace(",", ""), True
    for content in reversed(boxed_contents(text)):
        numbers = NUMBER.findall(content)
        if numbers:
            return numbers[-1].replace(",", ""), True
    numbers = NUMBER.findall(text)
    return (numbers[-1].replace(",", ""), False) if numbers else (None, False)


def same_number(a: str, b: str) -> bool:
    """Numeric equality, so that "18", "18.0" and "18.00" agree."""
    return Fraction(a) == Fraction(b)


class GSM8KEvaluator(Evaluator):
    """Reward 1 for the right number; a wrong but marked answer earns `format_reward` (0 here)."""

    format_reward: float = 0.0

    def evaluate(self, item: dict[str, Any], response: str) -> EvalResult:
        reference, _ = final_answer(str(item["answer"]))  # "72" or a raw "... #### 72" solution
        answer, marked = final_answer(response)
        correct = reference is not None and answer is not None and same_number(answer, reference)
        reward = 1.0 if correct else self.format_reward if marked else 0.0
        return EvalResult(reward=reward, correct=correct, metrics={"marked_answer": float(marked)})


class GSM8KFormatEvaluator(GSM8KEvaluator):
    """GSM8KEvaluator plus a small reward for a marked answer, to teach the format early."""

    format_reward = 0.1
