"""The calculator tool: evaluates `a*b`, `a+b` or `a-b` of whole numbers (no eval of arbitrary code)."""

from __future__ import annotations

import re

EXPRESSION = re.compile(r"\s*(-?\d+)\s*([*+-])\s*(-?\d+)\s*")


def calculate(expression: str) -> str:
    m = EXPRESSION.fullmatch(expression)
    if m is None:
        raise ValueError(f"cannot read {expression!r}: write two whole numbers and one of * + -")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return str(a * b if op == "*" else a + b if op == "+" else a - b)
