"""A scripted policy for the agent worker's tests: an InferenceEngine whose "model" is a function
of the decoded context that says what the next turn is. It emits that text's tokens (then eos),
honours stop tokens and the token budget like a real engine, gives every emitted token its own
logprob (so alignment can be checked), and records what it was asked and what it emitted.

Also: char tokenizers for the tests, plain and with a ChatML-like chat template that renders
tools and tool messages (`<|im_start|>`/`<|im_end|>` are special tokens, `<|im_end|>` is eos).
"""

from __future__ import annotations

import string
import threading
from collections.abc import Callable, Mapping

import torch

from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.models.factory import char_tokenizer

VOCAB = string.ascii_letters + string.digits + " \n.,:;!?*+-=/()[]{}<>\"'_|#@\\%^$&~"

CHATML = (
    "{% if tools %}<|im_start|>system\ntools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.content }}</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def plain_tokenizer():
    return char_tokenizer(VOCAB)


def chat_tokenizer():
    tok = char_tokenizer(VOCAB)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    return tok


Script = Callable[[str], str]


class ScriptedEngine(InferenceEngine):
    """`script(context)` -> the next turn's text. Not thread safe beyond its lock (like LocalEngine)."""

    def __init__(self, tokenizer, script: Script, end_with_eos: bool = True) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self.end_with_eos = end_with_eos
        self.calls: list[int] = []  # batch size of each generate call
        self.contexts: list[str] = []
        self.emitted: list[tuple[list[int], list[float]]] = []
        self._next_lp = 0
        self._lock = threading.Lock()

    def _logprobs(self, n: int) -> list[float]:
        out = [-(self._next_lp + i + 1) / 1000 for i in range(n)]
        self._next_lp += n
        return out

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        with self._lock:
            self.calls.append(len(prompts))
            return [[self._one(p, params)] for p in prompts]

    def _one(self, prompt: list[int], params: SamplingParams) -> Completion:
        context = self.tokenizer.decode(prompt, skip_special_tokens=False)
        self.contexts.append(context)
        ids = list(self.tokenizer(self.script(context), add_special_tokens=False)["input_ids"])
        if self.end_with_eos:
            ids.append(self.tokenizer.eos_token_id)
        stop = next((i + 1 for i, t in enumerate(ids) if t in params.stop_token_ids), None)
        if stop is not None:
            ids = ids[:stop]
        reason = "stop"
        if len(ids) > params.max_new_tokens:
            ids, reason = ids[: params.max_new_tokens], "length"
        elif stop is None and not self.end_with_eos:
            reason = "length"
        lps = self._logprobs(len(ids))
        self.emitted.append((ids, lps))
        return Completion(list(prompt), ids, lps, reason, self.policy_version)

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        self.policy_version = version
