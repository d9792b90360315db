"""Tool-call parsing (Hermes and plain) and the ToolBox: argument checks, exceptions, timeouts,
and the calls of one turn running at once."""

from __future__ import annotations

import asyncio
import json

from agent_recipe import tool, write_recipe
from hypothesis import given
from hypothesis import strategies as st

from nexrl_runtime.rollout.agent import ToolBox, ToolCall, load_agent_config, parse_hermes, parse_plain
from nexrl_runtime.rollout.agent.config import AgentConfig, ToolSpec
from nexrl_runtime.rollout.agent.tools import as_text, check_arguments

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@given(st.lists(st.tuples(NAMES, st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)), max_size=3),
       st.text(alphabet="abc .\n", max_size=10))  # fmt: skip
def test_hermes_calls_round_trip(calls, prose) -> None:
    text = prose + "".join(
        f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls
    )
    parsed = parse_hermes(text)
    assert [(c.name, c.arguments, c.error) for c in parsed.calls] == [(n, a, None) for n, a in calls]
    assert parsed.content == prose.strip()


def test_hermes_malformed_calls_are_errors_for_the_model() -> None:
    encoded = json.dumps({"name": "f", "arguments": json.dumps({"x": 2})})
    blocks = ['{"name": 1}', encoded]
    parsed = parse_hermes("a" + "".join(f"<tool_call>{b}</tool_call>" for b in blocks) + "<tool_call>{oops")
    first, second, third = parsed.calls
    assert first.error and "expected" in first.error
    assert (second.name, second.arguments, second.error) == ("f", {"x": 2}, None)  # JSON-encoded arguments
    assert third.error and third.error.startswith("could not parse the tool call")  # unclosed
    assert parsed.content == "a"
    assert parse_hermes("just an answer").calls == []


def test_plain_calls_bind_bare_text_to_the_one_argument() -> None:
    cfg = AgentConfig(tools=[ToolSpec(**tool("calc", "calc"))])
    parsed = parse_plain('[calc:12*34] then [calc:{"expression": "1*2"}] [other:x] [calc:{bad]', cfg)
    assert [(c.name, c.arguments, c.error is None) for c in parsed.calls] == [
        ("calc", {"expression": "12*34"}, True),
        ("calc", {"expression": "1*2"}, True),
        ("other", {}, True),  # unknown tool: the runner says so
        ("calc", {}, False),
    ]
    assert parsed.content == "then"
    assert parse_plain("408", cfg).calls == [] and parse_plain("408", cfg).content == "408"


def test_argument_checks() -> None:
    spec = ToolSpec(
        name="f",
        entry_point="t.py:f",
        parameters={
            "type": "object",
            "properties": {"n": {"type": "integer"}, "mode": {"type": "string", "enum": ["a", "b"]}},
            "required": ["n"],
            "additionalProperties": False,
        },
    )
    assert check_arguments(spec, {"n": 3, "mode": "a"}) is None
    assert check_arguments(spec, {}) == "missing required argument(s) ['n']"
    assert check_arguments(spec, {"n": True}) == "argument 'n' must be of type integer (got bool True)"
    assert check_arguments(spec, {"n": "3"}) == "argument 'n' must be of type integer (got str '3')"
    enum = "argument 'mode' must be one of ['a', 'b'] (got 'c')"
    assert check_arguments(spec, {"n": 1, "mode": "c"}) == enum
    assert check_arguments(spec, {"n": 1, "x": 0}) == "unknown argument(s) ['x']; known: ['mode', 'n']"
    assert as_text({"a": 1}) == '{"a": 1}' and as_text("s") == "s" and as_text({1, 2}).startswith("{")


def test_toolbox_outcomes_and_concurrency(tmp_path) -> None:
    root = write_recipe(tmp_path)
    box = ToolBox(load_agent_config("agent_workspace/agent_config.yaml", root), root)
    calls = [
        ToolCall("calc", {"expression": "3*4"}, ""),
        ToolCall("calc", {}, ""),
        ToolCall("boom", {"expression": "x"}, ""),
        ToolCall("slow", {"expression": "x"}, ""),
        ToolCall("meet", {"expression": "m1"}, ""),
        ToolCall("meet", {"expression": "m2"}, ""),  # passes the 2-party barrier only beside m1
        ToolCall("", {}, "", error="could not parse"),
    ]
    out = asyncio.run(box.run_all(calls))
    assert [(o.status, o.result) for o in out] == [
        ("ok", "12"),
        ("invalid", "error: missing required argument(s) ['expression']"),
        ("error", "error: ZeroDivisionError: no x"),
        ("timeout", "error: the tool timed out after 0.2 s"),
        ("ok", "m1"),
        ("ok", "m2"),
        ("unparsed", "error: could not parse"),
    ]
