"""Pydantic validation errors in words, shared by the runtime's loader and the operator.

Pydantic only (no Hydra or torch), so the operator can word its checks of an inline recipe
exactly as ``nexrl run`` words them. Each problem is a ``(path, message)`` pair; ``problem_text``
joins them: ``trainer.bogus: unknown field``, ``rollout is required``,
``weight_sync.mode: must be one of 'sync', 'batch-async', 'fully-async' (got 'eventually')``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A recipe that cannot run; the message says where and why (the CLI prints it, exit 2)."""


Problem = tuple[str, str]
"""(dotted path, what is wrong in words)"""

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_UNION_TAG = re.compile(r"^(int|str|float|bool|none|bytes|.*\[.*\])$")
"""Names pydantic puts into an error's location for the member of a union that failed."""
_KINDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "str": "a string", "list": "a list", "tuple": "a list", "dict": "an object (a mapping)",
    "model": "an object (a mapping)", "model_attributes": "an object (a mapping)", "none": "null",
}


def field_path(loc: Iterable[Any], prefix: str = "") -> str:
    """``('trainer', 'resources', 'limits', 'nvidia.com/gpu')`` ->
    ``trainer.resources.limits['nvidia.com/gpu']``; list indexes as ``[i]``, after ``prefix``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            path += f".{part}" if path else str(part)
        else:
            path += f"[{str(part)!r}]"
    return path or "<root>"


def problem_text(path: str, message: str) -> str:
    """``path: message``, or ``path is required`` for messages that read on from the path."""
    return f"{path} {message}" if message.startswith(("is ", "are ")) else f"{path}: {message}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(error_type: str) -> str | None:
    """``int_parsing`` / ``int_type`` / ``int_from_float`` -> 'an integer'."""
    for prefix, words in _KINDS.items():
        if error_type == prefix or error_type.startswith(f"{prefix}_"):
            return words
    return None


def _expected(error: Any) -> str:
    """What the field must be, in words (no 'got'); falls back to pydantic's own message."""
    kind, ctx = error["type"], error.get("ctx") or {}
    bounds = {"greater_than": "greater than", "greater_than_equal": "greater than or equal to",
              "less_than": "less than", "less_than_equal": "less than or equal to"}
    if kind in bounds:
        bound = next(iter(ctx.values()), "?")
        return f"must be {bounds[kind]} {bound}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?').replace(' or ', ', ')}"
    if kind == "enum":
        return f"must be one of {ctx.get('expected', '?').replace(' or ', ', ')}"
    if kind == "string_too_short":
        least = ctx.get("min_length")
        return "must not be empty" if least == 1 else f"needs at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"may have at most {ctx.get('max_length')} item(s)"
    if kind in ("int_from_float", "float_finite_number"):
        return "must be an integer" if kind == "int_from_float" else "must be a finite number"
    if (words := _kind(kind)) is not None:
        return f"must be {words}"
    message = str(error["msg"])
    return message[0].lower() + message[1:] if message else kind


def _describe(error: Any, model: type[BaseModel] | None) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field" + _suggestion(error["loc"], model)
    if kind in ("value_error", "assertion_error"):
        message = str(error["msg"])
        return re.sub(r"^(Value error|Assertion failed), ", "", message)
    return f"{_expected(error)} (got {_shown(error.get('input'))})"


def _submodel(model: type[BaseModel], part: Any) -> type[BaseModel] | None:
    """The model of field ``part`` (by name or alias) of ``model``, when it is one (or an optional one)."""
    if not isinstance(part, str):
        return None
    for name, field in model.model_fields.items():
        if part in (name, field.alias):
            for sub in (field.annotation, *get_args(field.annotation)):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    return sub
    return None


def _suggestion(loc: Sequence[Any], model: type[BaseModel] | None) -> str:
    """`` (did you mean 'clip_low'?)`` when the parent model has a field of a close name."""
    for part in loc[:-1]:
        if model is None:
            return ""
        model = _submodel(model, part)
    if model is None:
        return ""
    names: list[str] = []
    for name, field in model.model_fields.items():
        names += [name] + ([field.alias] if field.alias else [])
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def located_problems(err: ValidationError, model: type[BaseModel] | None = None
                     ) -> list[tuple[tuple[Any, ...], str, str]]:
    """Every problem of a pydantic error as (location, pydantic error type, words); ``model`` (the
    validated model) lets an unknown field suggest a known one. A value that no member of a union
    accepts is one problem (its type ``union``)."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for error in err.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
        merged.setdefault(loc, []).append({**error, "loc": loc})
    out = []
    for loc, errors in merged.items():
        if len(errors) == 1:
            out.append((loc, errors[0]["type"], _describe(errors[0], model)))
            continue
        wanted = list(dict.fromkeys(_expected(e).removeprefix("must be ") for e in errors))
        out.append((loc, "union", f"must be {' or '.join(wanted)} (got {_shown(errors[0].get('input'))})"))
    return out


def problems(err: ValidationError, model: type[BaseModel] | None = None) -> list[Problem]:
    """Every problem of a pydantic error as (dotted path, words); see ``located_problems``."""
    return [(field_path(loc), message) for loc, _, message in located_problems(err, model)]


def problem_lines(err: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """``problems`` as text lines, each path under ``prefix``."""
    found = located_problems(err, model)
    return [problem_text(field_path(loc, prefix), message) for loc, _, message in found]
