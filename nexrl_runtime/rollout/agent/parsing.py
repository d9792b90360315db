"""Tool calls read from the text of the model's sampled tokens (pure functions).

Hermes (instruct models): `<tool_call>{"name": "calc", "arguments": {"expression": "2*3"}}</tool_call>`,
any number per turn. Plain (the tiny char model, whose vocabulary is a few characters):
`[NAME:ARGS]`, where ARGS is a JSON object, or bare text bound to the tool's one argument (its first
required property, else its first property); ARGS may not contain `]`. Text outside the calls is the
turn's content: a turn without calls is the final answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nexrl_runtime.rollout.agent.config import AgentConfig


@dataclass(frozen=True)
class ToolCall:
    """One call the model made; `error` set means it could not be read (shown to the model)."""

    name: str
    arguments: dict[str, Any]
    raw: str
    error: str | None = None


@dataclass(frozen=True)
class ParsedTurn:
    content: str
    calls: list[ToolCall] = field(default_factory=list)


Parser = Callable[[str], ParsedTurn]

HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
PLAIN = re.compile(r"\[([A-Za-z_][A-Za-z0-9_.-]*):([^\]]*)\]")


def parse_hermes(text: str) -> ParsedTurn:
    """Every `<tool_call>` block (an unclosed last one too: it fails to parse and says so)."""
    calls = []
    for m in HERMES.finditer(text):
        body = m.group(1).strip()
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("name"), str):
                raise ValueError('expected {"name": ..., "arguments": {...}}')
            args = data.get("arguments", {})
            if isinstance(args, str):  # some models send the arguments JSON-encoded
                args = json.loads(args)
            if not isinstance(args, dict):
                raise ValueError(f"arguments must be an object, got {type(args).__name__}")
            calls.append(ToolCall(data["name"], args, m.group(0)))
        except ValueError as err:
            calls.append(ToolCall("", {}, m.group(0), f"could not parse the tool call: {err}"))
    return ParsedTurn(HERMES.sub("", text).strip(), calls)


def parse_plain(text: str, config: AgentConfig) -> ParsedTurn:
    """Every `[NAME:ARGS]`; bare ARGS go to the tool's one argument."""
    calls = []
    for m in PLAIN.finditer(text):
        name, body = m.group(1), m.group(2)
        if body.lstrip().startswith("{"):
            try:
                args = json.loads(body)
                if not isinstance(args, dict):
                    raise ValueError("arguments must be an object")
            except ValueError as err:
                calls.append(ToolCall(name, {}, m.group(0), f"could not parse the arguments: {err}"))
                continue
        else:
            args = _bind_bare(name, body, config)
        calls.append(ToolCall(name, args, m.group(0)))
    return ParsedTurn(PLAIN.sub("", text).strip(), calls)


def _bind_bare(name: str, body: str, config: AgentConfig) -> dict[str, Any]:
    spec = config.tool(name)
    if spec is None:
        return {}  # the runner reports the unknown tool
    props = list(spec.parameters.get("properties", {}))
    required = list(spec.parameters.get("required", []))
    key = (required or props or [None])[0]
    return {} if key is None else {key: body}


def make_parser(kind: str, config: AgentConfig) -> Parser:
    if kind == "hermes":
        return parse_hermes
    if kind == "plain":
        return lambda text: parse_plain(text, config)
    raise ValueError(f"format.tool_calls: unknown format {kind!r}; use hermes or plain")
