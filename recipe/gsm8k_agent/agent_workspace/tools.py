"""The calculator tool of the GSM8K agent: an arithmetic expression of numbers, + - * / // % **
and parentheses, read with Python's parser and evaluated node by node (no eval of code)."""

from __future__ import annotations

import ast
import operator
from fractions import Fraction

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}  # fmt: skip


def _value(node: ast.AST) -> Fraction:
    number = isinstance(node, ast.Constant) and type(node.value) in (int, float)
    if number:
        return Fraction(str(node.value))  # type: ignore[attr-defined]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _value(node.operand)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > 64):
            raise ValueError("powers must be whole numbers up to 64")
        return Fraction(BINARY[type(node.op)](left, right))
    raise ValueError(f"not arithmetic: {ast.unparse(node)!r}")


def calculate(expression: str) -> str:
    """The value, as an integer when it is one, else a decimal (up to 10 places)."""
    tree = ast.parse(expression.replace(",", "").replace("^", "**"), mode="eval")
    value = _value(tree.body)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.10f}".rstrip("0")
