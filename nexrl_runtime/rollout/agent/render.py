"""Turns to tokens. The model's own tokens are never re-rendered or re-tokenised: a renderer makes
only the tokens around them (the opening prompt, and after a model turn the tokens that close it,
show the tool results and open the next model turn).

Chat template: the tokenizer's template renders the opening messages (with the tool schemas as
`tools`); what follows a model turn is the template's text for the tool messages, found as the
difference of two renderings with a stand-in assistant message, so it is the template's own.
Whatever of the template's end-of-turn text (e.g. `<|im_end|>\\n`) the model did not sample itself
is added as context. Plain (no template, e.g. the tiny char model): the opening is the system text
followed by the user text, as they are; each tool result is `format.tool_result` with `{result}` and
`{name}` filled in, the results of one turn one after the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from transformers import PreTrainedTokenizerBase

from nexrl_runtime.rollout.agent.config import AgentConfig
from nexrl_runtime.rollout.agent.tools import ToolOutcome

STAND_IN = "\x00stand-in\x00"  # an assistant message no model writes


class Renderer(ABC):
    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AgentConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    @abstractmethod
    def opening(self, system: str | None, user: str) -> list[int]:
        """The prompt before the first model turn (ending where the model starts writing)."""

    @abstractmethod
    def after_turn(self, sampled: list[int], outcomes: list[ToolOutcome]) -> list[int]:
        """The context tokens after a model turn of `sampled` tokens whose calls gave `outcomes`."""


class PlainRenderer(Renderer):
    def opening(self, system: str | None, user: str) -> list[int]:
        return self.tokens((system or "") + user)

    def after_turn(self, sampled: list[int], outcomes: list[ToolOutcome]) -> list[int]:
        fmt = self.config.format.tool_result
        text = "".join(fmt.replace("{name}", o.call.name).replace("{result}", o.result) for o in outcomes)
        return self.tokens(text)


class ChatTemplateRenderer(Renderer):
    """Shared by all conversations of a worker: the tool-message text is rendered after a stand-in
    head (a system message iff the config has a system prompt, a user message, the assistant)."""

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        tools = [t.schema() for t in self.config.tools] if self.config.format.tools_in_template else None
        return str(
            self.tokenizer.apply_chat_template(
                messages, tools=tools or None, add_generation_prompt=generation_prompt, tokenize=False
            )
        )

    def opening(self, system: str | None, user: str) -> list[int]:
        head = [{"role": "system", "content": system}] if system else []
        return self.tokens(self._render([*head, {"role": "user", "content": user}], True))

    def after_turn(self, sampled: list[int], outcomes: list[ToolOutcome]) -> list[int]:
        head = [{"role": "system", "content": "S"}] if self.config.system_prompt else []
        turn = [*head, {"role": "user", "content": "U"}, {"role": "assistant", "content": STAND_IN}]
        closed = self._render(turn, False)
        tool_msgs = [{"role": "tool", "name": o.call.name, "content": o.result} for o in outcomes]
        full = self._render(turn + tool_msgs, True)
        if not full.startswith(closed) or STAND_IN not in closed:
            raise ValueError(
                "the tokenizer's chat template does not render tool messages after an assistant turn "
                "as a continuation; use format.prompt: plain"
            )
        closing = closed[closed.rindex(STAND_IN) + len(STAND_IN) :]  # e.g. "<|im_end|>\n"
        said = self.tokenizer.decode(sampled, skip_special_tokens=False)
        done = max(k for k in range(len(closing) + 1) if said.endswith(closing[:k]))
        return self.tokens(closing[done:] + full[len(closed) :])


def make_renderer(tokenizer: PreTrainedTokenizerBase, config: AgentConfig) -> Renderer:
    kind = config.format.prompt
    if kind == "auto":
        kind = "chat_template" if getattr(tokenizer, "chat_template", None) else "plain"
    if kind == "chat_template":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("format.prompt=chat_template: the tokenizer has no chat template")
        return ChatTemplateRenderer(tokenizer, config)
    return PlainRenderer(tokenizer, config)
