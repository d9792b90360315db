"""The agent rollout worker (`rollout.worker: agent`): each item is a conversation in which the
model calls the recipe's tools and sees their results, kept as token ids from start to end, and
becomes one Trajectory. A rollout call runs its conversations at once on an asyncio loop."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import RolloutConfig
from nexrl_runtime.data.loader import Item
from nexrl_runtime.errors import InferenceFailed, item_name
from nexrl_runtime.inference.base import InferenceEngine, SamplingParams
from nexrl_runtime.rollout.agent.config import AgentConfig, load_agent_config, render_prompt
from nexrl_runtime.rollout.agent.parsing import make_parser
from nexrl_runtime.rollout.agent.render import ChatTemplateRenderer, make_renderer
from nexrl_runtime.rollout.agent.scheduler import TurnScheduler, pick_mode
from nexrl_runtime.rollout.agent.tools import ToolBox
from nexrl_runtime.rollout.agent.trace import AgentTrace, Turn, score, to_trajectory
from nexrl_runtime.rollout.evaluator import Evaluator
from nexrl_runtime.rollout.worker import RolloutWorker
from nexrl_runtime.types import Trajectory


class AgentWorker(RolloutWorker):
    """Reads `rollout.agent_config` (relative to the recipe folder) when built, so a bad agent
    config or tool entry point fails before any work. `last_stats` holds the latest call's
    engine figures (busy seconds, wall seconds, engine calls, turns)."""

    def __init__(
        self,
        engine: InferenceEngine,
        tokenizer: PreTrainedTokenizerBase,
        evaluator: Evaluator,
        config: RolloutConfig,
        run_id: str,
        agent: AgentConfig | None = None,
    ) -> None:
        super().__init__(engine, tokenizer, evaluator, config, run_id)
        base = Path(config.recipe_dir)
        self.agent = agent or load_agent_config(config.agent_config, base)
        self.tools = ToolBox(self.agent, base)
        self.renderer = make_renderer(tokenizer, self.agent)
        kind = self.agent.format.tool_calls
        if kind == "auto":
            kind = "hermes" if isinstance(self.renderer, ChatTemplateRenderer) else "plain"
        self.parse = make_parser(kind, self.agent)
        self.stop_ids = tuple(self._stop_token(i, s) for i, s in enumerate(self.agent.stop.tokens))
        self.last_stats: dict[str, float] = {}

    def _stop_token(self, index: int, text: str) -> int:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) != 1:
            raise ConfigError(
                f"agent config stop.tokens[{index}]: {text!r} is {len(ids)} tokens of this tokenizer, "
                "not one (a stop token must be a single token)"
            )
        return int(ids[0])

    def build_prompt(self, item: Item) -> list[int]:
        """The conversation's opening tokens (the data loader measures prompts with it too)."""
        a, data, prompt = self.agent, item.data, str(item.prompt)
        system = a.system_prompt and render_prompt(a.system_prompt, "system_prompt", data, prompt, a)
        user = render_prompt(a.user_prompt, "user_prompt", data, prompt, a)
        return self.renderer.opening(system, user)

    def turn_params(self, greedy: bool, room: int) -> SamplingParams:
        s, t = self.config.sampling, self.agent.sampling
        return SamplingParams(
            temperature=0.0 if greedy else (s.temperature if t.temperature is None else t.temperature),
            top_p=1.0 if greedy else (s.top_p if t.top_p is None else t.top_p),
            max_new_tokens=min(t.max_new_tokens or s.max_new_tokens, room),
            stop_token_ids=self.stop_ids,
        )

    def rollout(self, items: list[Item], greedy: bool = False) -> list[Trajectory]:
        if not items:
            return []
        return asyncio.run(self.arollout(items, greedy))

    async def arollout(self, items: list[Item], greedy: bool = False) -> list[Trajectory]:
        """All conversations at once (at most concurrency.max_conversations), one trajectory each."""
        scheduler = TurnScheduler(self.engine, pick_mode(self.engine, self.agent.concurrency.batching))
        gate = asyncio.Semaphore(self.agent.concurrency.max_conversations)
        start = time.perf_counter()

        async def one(item: Item) -> AgentTrace:
            async with gate:
                return await self.converse(item, greedy, scheduler)

        try:
            traces = await asyncio.gather(*(one(it) for it in items))
        except Exception as err:
            raise InferenceFailed(f"{type(err).__name__}: {err}") from err
        wall = time.perf_counter() - start
        self._add_time("generate_seconds", scheduler.busy_seconds)
        self.last_stats = {
            "busy_seconds": scheduler.busy_seconds,
            "wall_seconds": wall,
            "engine_calls": float(scheduler.engine_calls),
            "turns": float(scheduler.turns),
        }
        made = [self._scored(it, tr) for it, tr in zip(items, traces, strict=True)]
        return [t for t in made if t is not None]

    async def converse(self, item: Item, greedy: bool, scheduler: TurnScheduler) -> AgentTrace:
        """Model turn, tool calls, their results, ... until an answer, max_turns or the length limit."""
        limit = self.config.max_sequence_length
        trace = AgentTrace(item.data)
        trace.add_context(self.build_prompt(item))
        trace.prompt_length = len(trace.tokens)
        for turn_no in range(self.agent.max_turns):
            room = limit - len(trace.tokens)
            if room < 1:
                trace.finish = "length"
                break
            c = await scheduler.generate(list(trace.tokens), self.turn_params(greedy, room))
            trace.add_sampled(c.token_ids, c.logprobs)
            text = self.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            parsed = self.parse(text)
            turn = Turn(text, len(c.token_ids), policy_version=c.policy_version)
            trace.turns.append(turn)
            if c.finish_reason == "length":  # the turn was cut: no answer, no calls to trust
                trace.finish = "length"
                break
            if not parsed.calls:
                trace.answer = parsed.content
                trace.finish = "answer"
                break
            if turn_no == self.agent.max_turns - 1:  # no turn left to read the results in
                trace.finish = "max_turns"
                break
            turn.outcomes = await self.tools.run_all(parsed.calls[: self.agent.stop.max_tool_calls_per_turn])
            context = self.renderer.after_turn(c.token_ids, turn.outcomes)
            room = limit - len(trace.tokens)
            trace.add_context(context[:room])
            if len(context) >= room:
                trace.finish = "length"
                break
        return trace

    def _scored(self, item: Item, trace: AgentTrace) -> Trajectory | None:
        """None when the evaluator failed and `errors` lets the run go on without the sample."""
        start = time.perf_counter()
        try:
            result = score(self.evaluator, item.data, trace)
            if not math.isfinite(result.reward):
                raise ValueError(f"the evaluator returned a non-finite reward {result.reward!r}")
        except Exception as err:
            if self.errors is None:
                raise
            self.errors.record("evaluator", item_name(item), err)
            return None
        finally:
            self._add_time("score_seconds", time.perf_counter() - start)
        if self.errors is not None:
            self.errors.ok()
        return to_trajectory(
            trace, result, self.agent.truncated_reward, item.group_id, self.run_id, item.sample_id
        )
