"""The inference interface rollout workers talk to: in-process engine or an HTTP/vLLM client."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. temperature 0 means greedy; `n` samples per prompt."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    n: int = 1
    stop_token_ids: tuple[int, ...] = ()


@dataclass
class Completion:
    """One sampled continuation. `logprobs[i]` is the policy's logprob of `token_ids[i]` at
    temperature 1 (the raw model distribution, as vLLM reports by default), which is what the
    trainer recomputes for the PPO ratio."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    policy_version: int
    extra: dict = field(default_factory=dict)


class InferenceEngine(ABC):
    """Generates completions for token-id prompts and takes new weights with a version label."""

    policy_version: int = 0

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt, `params.n` completions."""

    async def agenerate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        return await asyncio.to_thread(self.generate, prompts, params)

    @abstractmethod
    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace the served weights; afterwards completions carry `version`."""

    def rng_states(self) -> list[Any]:
        """The sampling generators' states, for a checkpoint ([]: none kept here, e.g. a server)."""
        return []

    def set_rng_states(self, states: list[Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `rng_states` returned."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (processes, connections)."""
