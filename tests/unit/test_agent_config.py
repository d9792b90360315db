"""Agent config: loading from the recipe folder, templating with the data item, and errors that
name the field, the value and what is valid."""

from __future__ import annotations

import pytest
import yaml
from agent_recipe import item, make_worker, tool, write_recipe
from scripted_policy import ScriptedEngine, plain_tokenizer

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.rollout.agent import load_agent_config
from nexrl_runtime.rollout.agent.config import render_prompt


def write(tmp_path, text: str) -> None:
    (tmp_path / "agent_workspace").mkdir(exist_ok=True)
    (tmp_path / "agent_workspace" / "agent_config.yaml").write_text(text)


def error(tmp_path, config: dict) -> str:
    write(tmp_path, yaml.safe_dump(config))
    with pytest.raises(ConfigError) as err:
        load_agent_config("agent_workspace/agent_config.yaml", tmp_path)
    return str(err.value)


def test_a_recipe_folder_config_loads_with_its_prompt_file_and_templates(tmp_path) -> None:
    root = write_recipe(tmp_path, system_prompt_file="agent_workspace/system.txt",
                        user_prompt="Q: {{ prompt }} ({{ item.level }})")  # fmt: skip
    system = "Tools: {% for t in tools %}{{ t.function.name }} {% endfor %}"
    (root / "agent_workspace" / "system.txt").write_text(system)
    cfg = load_agent_config("agent_workspace/agent_config.yaml", root)
    assert cfg.system_prompt and cfg.system_prompt_file is None and cfg.max_turns == 3
    assert cfg.tools[0].schema()["function"]["parameters"]["required"] == ["expression"]
    tok = plain_tokenizer()
    worker = make_worker(ScriptedEngine(tok, lambda c: "x"), tok, root)
    opening = tok.decode(worker.build_prompt(item("2*3", "6", level=2)))
    assert opening == "Tools: calc boom slow aslow meet wait open Q: 2*3 (2)"


def test_field_errors_name_the_field_and_value(tmp_path) -> None:
    bad_timeout = {**tool("calc", "calc"), "timeout_s": -1}
    msg = error(tmp_path, {"tools": [bad_timeout]})
    assert "tools[0].timeout_s: must be greater than 0.0 (got -1)" in msg
    assert "max_turn: unknown field (did you mean 'max_turns'?)" in error(tmp_path, {"max_turn": 3})
    assert "max_turns: must be greater than or equal to 1 (got 0)" in error(tmp_path, {"max_turns": 0})
    msg = error(tmp_path, {"truncated_reward": "zero"})
    assert "truncated_reward: must be a number or one of 'evaluator'" in msg and "'zero'" in msg
    assert "format.prompt: must be one of 'auto', 'chat_template', 'plain' (got 'jinja')" in error(
        tmp_path, {"format": {"prompt": "jinja"}}
    )
    schema = {**tool("calc", "calc"), "parameters": {"type": "object", "required": ["x"]}}
    assert "parameters.required names unknown properties ['x']" in error(tmp_path, {"tools": [schema]})
    twice = error(tmp_path, {"tools": [tool("calc", "calc"), tool("calc", "boom")]})
    assert "names must be unique, ['calc']" in twice
    both = error(tmp_path, {"system_prompt": "a", "system_prompt_file": "b.txt"})
    assert "system_prompt and system_prompt_file are exclusive" in both
    missing = error(tmp_path, {"system_prompt_file": "nope.txt"})
    assert "system_prompt_file: cannot read" in missing and "nope.txt" in missing
    assert "user_prompt: not a valid Jinja template" in error(tmp_path, {"user_prompt": "{{ oops"})
    no_colon = {**tool("c", "c"), "entry_point": "x"}
    assert "entry_point: must match the pattern" in error(tmp_path, {"tools": [no_colon]})


def test_missing_files_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"rollout\.agent_config: cannot read"):
        load_agent_config("agent_workspace/agent_config.yaml", tmp_path)
    write(tmp_path, "tools: [")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_agent_config("agent_workspace/agent_config.yaml", tmp_path)


def test_tool_entry_points_and_stop_tokens_fail_when_the_worker_is_built(tmp_path) -> None:
    tok = plain_tokenizer()
    engine = ScriptedEngine(tok, lambda c: "x")
    nah = {**tool("calc", "calc"), "entry_point": "agent_workspace/tools.py:nah"}
    root = write_recipe(tmp_path / "a", tools=[nah])
    with pytest.raises(ConfigError, match=r"tools\[0\]\.entry_point: .*has no attribute 'nah'"):
        make_worker(engine, tok, root)
    root = write_recipe(tmp_path / "b", tools=[{**tool("calc", "calc"), "entry_point": "missing.py:calc"}])
    with pytest.raises(ConfigError, match=r"tools\[0\]\.entry_point: .*does not exist"):
        make_worker(engine, tok, root)
    root = write_recipe(tmp_path / "c", stop={"tokens": ["]", "ab"]})
    with pytest.raises(ConfigError, match=r"stop.tokens\[1\]: 'ab' is 2 tokens of this tokenizer, not one"):
        make_worker(engine, tok, root)


def test_a_template_key_the_item_lacks_is_named(tmp_path) -> None:
    root = write_recipe(tmp_path, user_prompt="{{ question }}")
    cfg = load_agent_config("agent_workspace/agent_config.yaml", root)
    named = r"user_prompt: 'question' is undefined \(the data item has keys \['a'\]\)"
    with pytest.raises(ConfigError, match=named):
        render_prompt(cfg.user_prompt, "user_prompt", {"a": 1}, "p", cfg)
