"""Agent config: the recipe's `agent_workspace/agent_config.yaml` (prompts, tools, turn limits,
stop conditions, sampling), validated with pydantic so a bad value fails naming its field."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, ValidationError, model_validator

from nexrl_runtime.config.errors import ConfigError, problem_lines
from nexrl_runtime.contract import Strict

JSON_TYPES = ("object", "string", "number", "integer", "boolean", "array", "null")


class ToolSpec(Strict):
    """One tool the model may call: what it is told (name, description, argument schema) and
    the Python function that runs it (`file.py:function` from the recipe folder, or `pkg.mod:fn`)."""

    name: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments: an object schema (properties, required)",
    )
    entry_point: str = Field(..., pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(10.0, gt=0.0)

    @model_validator(mode="after")
    def _check_schema(self) -> ToolSpec:
        p = self.parameters
        if p.get("type") != "object":
            raise ValueError(f"tool {self.name!r}: parameters.type must be 'object' (got {p.get('type')!r})")
        props = p.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError(f"tool {self.name!r}: parameters.properties must be a mapping")
        for key, sub in props.items():
            kind = sub.get("type") if isinstance(sub, dict) else None
            if kind is not None and kind not in JSON_TYPES:
                raise ValueError(
                    f"tool {self.name!r}: parameters.properties.{key}.type must be one of "
                    f"{', '.join(JSON_TYPES)} (got {kind!r})"
                )
        missing = [r for r in p.get("required", []) if r not in props]
        if missing:
            raise ValueError(f"tool {self.name!r}: parameters.required names unknown properties {missing}")
        return self

    def schema(self) -> dict[str, Any]:
        """The OpenAI/Hermes function schema (what chat templates render as `tools`)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class TurnSampling(Strict):
    """Per model turn; unset fields take rollout.sampling's value."""

    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_new_tokens: int | None = Field(None, ge=1)


class StopConfig(Strict):
    """What ends a model turn (besides the tokenizer's eos) and how many calls a turn may make."""

    tokens: list[str] = Field(
        default_factory=list, description="strings that are single tokens of the tokenizer, e.g. ']'"
    )
    max_tool_calls_per_turn: int = Field(8, ge=1, description="more calls in one turn are not run")


class FormatConfig(Strict):
    """How turns are rendered to tokens and how tool calls are read from the model's tokens.
    auto: the tokenizer's chat template and Hermes calls where it has a template, else plain."""

    prompt: Literal["auto", "chat_template", "plain"] = "auto"
    tool_calls: Literal["auto", "hermes", "plain"] = "auto"
    tool_result: str = Field(
        "={result};", description="plain format: one tool result as text; {result} and {name} are replaced"
    )
    tools_in_template: bool = Field(True, description="chat template: pass the tool schemas as `tools`")


class ConcurrencyConfig(Strict):
    """Conversations of one rollout call run at once; their turns interleave on the engine."""

    max_conversations: int = Field(64, ge=1)
    batching: Literal["auto", "batch", "concurrent"] = Field(
        "auto",
        description="batch: the waiting turns go to the engine as one generate call (in-process and Ray "
        "engines); concurrent: one request per turn (HTTP servers batch them); auto picks",
    )


class AgentConfig(Strict):
    """A whole agent_config.yaml. Prompts are Jinja templates of the data item's fields (and
    `item`, `prompt`, `tools`, `tools_json`)."""

    system_prompt: str | None = None
    system_prompt_file: str | None = Field(None, description="a template file, relative to the recipe folder")
    user_prompt: str = "{{ prompt }}"
    tools: list[ToolSpec] = Field(default_factory=list)
    max_turns: int = Field(4, ge=1, description="model turns per conversation")
    stop: StopConfig = StopConfig()
    sampling: TurnSampling = TurnSampling()
    truncated_reward: float | Literal["evaluator"] = Field(
        0.0, description="reward of a conversation cut at rollout.max_sequence_length"
    )
    format: FormatConfig = FormatConfig()
    concurrency: ConcurrencyConfig = ConcurrencyConfig()

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if self.system_prompt is not None and self.system_prompt_file is not None:
            raise ValueError("system_prompt and system_prompt_file are exclusive: give one")
        names = [t.name for t in self.tools]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tools: names must be unique, {twice} appear more than once")
        return self

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)


def load_agent_config(path: str | Path, recipe_dir: str | Path = ".") -> AgentConfig:
    """Read and validate an agent config (a relative `path` is under `recipe_dir`); a system prompt
    file is read here, so a missing one fails before any rollout."""
    file = Path(path)
    file = file if file.is_absolute() else Path(recipe_dir) / file
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"rollout.agent_config: cannot read {file}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"rollout.agent_config: {file} is not valid YAML: {err}") from None
    try:
        cfg = AgentConfig.model_validate(raw)
    except ValidationError as err:
        lines = problem_lines(err, AgentConfig)
        raise ConfigError(f"invalid agent config {file}:\n  " + "\n  ".join(lines)) from None
    if cfg.system_prompt_file is not None:
        prompt_file = Path(recipe_dir) / cfg.system_prompt_file
        try:
            text = prompt_file.read_text()
            cfg = cfg.model_copy(update={"system_prompt": text, "system_prompt_file": None})
        except OSError as err:
            raise ConfigError(f"{file}: system_prompt_file: cannot read {prompt_file}: {err}") from None
    for field in ("system_prompt", "user_prompt"):
        text = getattr(cfg, field)
        if text is not None:
            try:
                _ENV.parse(text)
            except jinja2.TemplateSyntaxError as err:
                raise ConfigError(f"{file}: {field}: not a valid Jinja template: {err}") from None
    return cfg


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=64)
def _template(text: str) -> jinja2.Template:
    return _ENV.from_string(text)  # compiling costs milliseconds: once per prompt template


def render_prompt(template: str, field: str, item: dict[str, Any], prompt: str, cfg: AgentConfig) -> str:
    """Fill a prompt template with the data item; a missing key names the template and the key."""
    schemas = [t.schema() for t in cfg.tools]
    values = {**item, "item": item, "prompt": prompt, "tools": schemas, "tools_json": json.dumps(schemas)}
    try:
        return _template(template).render(values)
    except jinja2.UndefinedError as err:
        raise ConfigError(f"agent config {field}: {err} (the data item has keys {sorted(item)})") from None
