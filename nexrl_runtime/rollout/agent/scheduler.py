"""Model turns of many conversations onto one InferenceEngine, interleaved on an asyncio loop, so
that a conversation waiting on a tool leaves the engine to the others.

`batch`: the turns waiting when the engine is free go to it as one `agenerate` call (the in-process
engine holds a lock and batches on its own; so do the Ray engines). Turns with different token
budgets share a call: it asks for the largest, and each turn is cut to its own (a cut turn ends
with finish_reason 'length'; its tokens are still exactly the sampled ones). `concurrent`: every
turn is its own request at once (HTTP servers such as vLLM batch them continuously).
Both count the time the engine had work (`busy_seconds`) for the engine-idle figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Literal

from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams

Mode = Literal["batch", "concurrent"]


def pick_mode(engine: InferenceEngine, batching: str) -> Mode:
    """auto: concurrent for engines with their own async path (OpenAIEngine), else batch."""
    if batching in ("batch", "concurrent"):
        return batching  # type: ignore[return-value]
    native = type(engine).agenerate is not InferenceEngine.agenerate
    return "concurrent" if native else "batch"


def cut(c: Completion, limit: int) -> Completion:
    """The first `limit` sampled tokens of `c` (finish_reason 'length' if any were dropped)."""
    if len(c.token_ids) <= limit:
        return c
    ids, lps = c.token_ids[:limit], c.logprobs[:limit]
    return dataclasses.replace(c, token_ids=ids, logprobs=lps, finish_reason="length")


class TurnScheduler:
    """Create one per rollout call, on the loop that runs its conversations."""

    def __init__(self, engine: InferenceEngine, mode: Mode) -> None:
        self.engine = engine
        self.mode = mode
        self.busy_seconds = 0.0
        self.engine_calls = 0
        self.turns = 0
        self._queue: list[tuple[list[int], SamplingParams, asyncio.Future[Completion]]] = []
        self._drain: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._busy_since = 0.0

    async def generate(self, prompt: list[int], params: SamplingParams) -> Completion:
        """One completion of `prompt` (params.n is taken as 1)."""
        self.turns += 1
        if self.mode == "concurrent":
            return await self._one(prompt, params)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._queue.append((prompt, params, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run_batches())
        return await future

    async def _one(self, prompt: list[int], params: SamplingParams) -> Completion:
        self._enter()
        try:
            self.engine_calls += 1
            out = await self.engine.agenerate([prompt], dataclasses.replace(params, n=1))
            return out[0][0]
        finally:
            self._leave()

    async def _run_batches(self) -> None:
        await asyncio.sleep(0)  # let the other conversations that are ready queue their turns too
        while self._queue:
            key = _key(self._queue[0][1])
            batch = [q for q in self._queue if _key(q[1]) == key]
            self._queue = [q for q in self._queue if _key(q[1]) != key]
            budget = max(p.max_new_tokens for _, p, _ in batch)
            params = dataclasses.replace(batch[0][1], max_new_tokens=budget, n=1)
            self._enter()
            try:
                self.engine_calls += 1
                out = await self.engine.agenerate([p for p, _, _ in batch], params)
            except Exception as err:
                for _, _, f in batch:
                    if not f.done():
                        f.set_exception(err)
                continue
            finally:
                self._leave()
            for (_, p, f), group in zip(batch, out, strict=True):
                if not f.done():
                    f.set_result(cut(group[0], p.max_new_tokens))
            await asyncio.sleep(0)  # the conversations just answered queue their next turns

    def _enter(self) -> None:
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.busy_seconds += time.perf_counter() - self._busy_since


def _key(p: SamplingParams) -> tuple[float, float, tuple[int, ...]]:
    return (p.temperature, p.top_p, p.stop_token_ids)
